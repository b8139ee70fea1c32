#!/usr/bin/env python
"""Train and evaluate AerOSeg (detectron2's command line).

    python tools/train_net.py --config-file configs/demo/tiny_cpu.yaml
    python tools/train_net.py --config-file CFG --num-gpus 4
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CFG --resume
    python tools/train_net.py --config-file CFG --engine detectron2   # detectron2's DefaultTrainer
    python tools/train_net.py --config-file CFG --launcher slurm --partition gpu --nodes 2 --gpus-per-node 8

Results (s-/u-/h-mIoU) are printed and written to OUTPUT_DIR/inference/<dataset>/.
"""
import logging
import os
import sys

import yaml

from aeroseg.checkpoint import AerOSegCheckpointer
from aeroseg.config import get_cfg
from aeroseg.data import check_datasets, register_datasets_from_config
from aeroseg.engine import Trainer, default_argument_parser, default_setup, launch
from aeroseg.modeling import build_model
from aeroseg.modeling.meta_arch import TRAINING_ONLY_PREFIXES
from aeroseg.utils import comm
from aeroseg.compat import detectron2_available
from aeroseg.engine.output_lock import release_output_dir_lock
from aeroseg.engine.submit import add_launcher_arguments, check_launcher, submit_training
from aeroseg.utils.errors import AerOSegError, ConfigError, one_line


def load_config(args):
    """The frozen config of ``--config-file`` and the command-line overrides (one-line errors)."""
    if not args.config_file:  # get_cfg() alone holds detectron2's defaults, not AerOSeg's (Base-AerOSeg.yaml)
        raise ConfigError("--config-file is required, e.g. configs/demo/tiny_cpu.yaml (every config inherits "
                          "configs/Base-AerOSeg.yaml)")
    cfg = get_cfg()
    try:
        if args.config_file:
            if not os.path.isfile(args.config_file):
                raise ConfigError(f"config file {args.config_file} does not exist")
            cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts or [])
    except (KeyError, ValueError, AssertionError) as exc:  # unknown key, bad value type, odd opts
        where = args.config_file or "command line"
        raise ConfigError(f"{where}: {str(exc).strip(chr(34)).strip(chr(39))}") from None
    except yaml.YAMLError as exc:  # the file itself, or one of its _BASE_ files
        raise ConfigError(f"{args.config_file} (or a _BASE_ file of it) is not valid YAML: "
                          f"{one_line(exc, 300)}") from None
    except OSError as exc:  # typically a _BASE_ path that does not exist
        missing = getattr(exc, "filename", None) or one_line(exc, 200)
        raise ConfigError(f"{args.config_file}: cannot read {missing} ({exc.strerror or 'unreadable'}); "
                          f"check its _BASE_ path (relative to the file that names it)") from None
    cfg.freeze()
    return cfg


def setup(args):
    cfg = load_config(args)
    register_datasets_from_config(cfg)
    default_setup(cfg, args)
    return cfg


def main(args):
    try:
        return _main(args)
    finally:
        release_output_dir_lock()


def _main(args):
    cfg = setup(args)
    logger = logging.getLogger("aeroseg")
    if args.engine == "detectron2":
        if not detectron2_available():
            raise AerOSegError("--engine detectron2 needs detectron2 installed (see docs/ENGINES.md)")
        from aeroseg.engine.detectron2_trainer import Detectron2Trainer as TrainerClass

        if not args.eval_only:
            check_datasets(cfg, train=True)  # AerOSeg's Trainer does this itself
    else:
        TrainerClass = Trainer
    engine = "detectron2 DefaultTrainer" if args.engine == "detectron2" else "aeroseg (own training loop)"
    logger.info("Engine: %s", engine)

    if args.eval_only:
        check_datasets(cfg, train=False)  # before the (possibly slow) model build
        if not cfg.MODEL.WEIGHTS and not args.resume:
            logger.warning("--eval-only without MODEL.WEIGHTS: evaluating the model as built (pretrained "
                           "parts only, the rest randomly initialised)")
        model = build_model(cfg)
        # A model trained with another number of training classes evaluates fine.
        AerOSegCheckpointer(model, cfg.OUTPUT_DIR, ignore_prefixes=TRAINING_ONLY_PREFIXES).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        return TrainerClass.test(cfg, model)

    trainer = TrainerClass(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None) -> int:
    parser = default_argument_parser()
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.launcher != "none":  # submitit: SLURM, or this machine (docs/CLUSTER.md)
            return submit_training(args, parser)
        check_launcher(args)  # no job options without a job
        args.num_gpus = 1 if args.num_gpus is None else args.num_gpus
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except AerOSegError as exc:
        if comm.is_main_process():
            print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
