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

from aeroseg.checkpoint import AerOSegCheckpointer
from aeroseg.config.loading import load_config as load_config_file
from aeroseg.config.validation import validate_config
from aeroseg.data import check_datasets, register_datasets_from_config
from aeroseg.engine import Trainer, default_argument_parser, default_setup, launch
from aeroseg.modeling import build_model
from aeroseg.modeling.meta_arch import TRAINING_ONLY_PREFIXES
from aeroseg.utils import comm
from aeroseg.compat import detectron2_available
from aeroseg.engine.output_lock import release_output_dir_lock
from aeroseg.engine.interruption import Interrupted, interruption_message
from aeroseg.engine.submit import add_launcher_arguments, check_launcher, submit_training
from aeroseg.utils.errors import AerOSegError, ConfigError

# Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def world_size_of(args) -> int:
    """The number of training processes the command line asks for (a job's --nodes x --gpus-per-node,
    torchrun's or a job task's WORLD_SIZE when set)."""
    if getattr(args, "launcher", "none") != "none":
        return int(args.nodes) * int(args.gpus_per_node)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return int(args.num_gpus or 1) * int(args.num_machines)


def check_arguments(args) -> None:
    """Command-line values that no config key covers (one-line ConfigError)."""
    for name in ("num_gpus", "num_machines"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected a number >= 1")
    if not 0 <= args.machine_rank < args.num_machines:
        raise ConfigError(f"--machine-rank {args.machine_rank}: expected 0..{args.num_machines - 1} "
                          f"(--num-machines {args.num_machines})")
    if args.overwrite and args.resume:
        raise ConfigError("--overwrite deletes the run that --resume would continue: pass one of them")
    if args.allow_config_changes and not args.resume:
        raise ConfigError("--allow-config-changes only applies to --resume")


def load_config(args):
    """The merged, validated and frozen config of ``--config-file`` and the overrides; the datasets
    of ``DATASETS.CUSTOM`` are registered.

    Nothing is built or written: every key is checked first (:func:`validate_config`), with
    one-line errors.
    """
    cfg = load_config_file(args.config_file, args.opts)
    # datasets first: the model's vocabulary (checked by validate_config's meta build) comes from them
    register_datasets_from_config(cfg)
    validate_config(cfg, "eval" if args.eval_only else "train", world_size=world_size_of(args), resume=args.resume,
                    here=getattr(args, "launcher", "none") == "none")
    cfg.freeze()
    return cfg


setup = load_config


def precheck_output_dir(cfg, args) -> None:
    """Would the output folder be refused (held by another run, holding another run)? Checked in the
    launching process, so that the refusal is one line before any process starts; the spawned main
    process takes the lock and checks again for the run."""
    if not cfg.OUTPUT_DIR or not os.path.isdir(cfg.OUTPUT_DIR):
        return
    from aeroseg.engine.output_lock import OutputDirLock
    from aeroseg.engine.run_folder import claim_run_folder

    OutputDirLock(cfg.OUTPUT_DIR).check_free()
    if not args.overwrite:  # (deleting is left to the run itself)
        claim_run_folder(cfg, resume=args.resume, eval_only=args.eval_only, allow_changes=args.allow_config_changes)


def main(args):
    try:
        return _main(args)
    except AerOSegError as exc:
        if comm.get_world_size() > 1:  # a spawned process: one line, exit status 2 for the launcher
            if comm.is_main_process():
                print(f"error: {exc}", file=sys.stderr, flush=True)
            elif not getattr(exc, "reported_by_main", False):  # an error of this process only
                print(f"error: rank {comm.get_rank()}: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise
    finally:
        release_output_dir_lock()


def _main(args):
    cfg = setup(args)
    check_datasets(cfg, train=not args.eval_only)  # before the folder is claimed and the model built
    default_setup(cfg, args)
    logger = logging.getLogger("aeroseg")
    if args.engine == "detectron2":
        if not detectron2_available():
            raise AerOSegError("--engine detectron2 needs detectron2 installed (see docs/ENGINES.md)")
        from aeroseg.engine.detectron2_trainer import Detectron2Trainer as TrainerClass
    else:
        TrainerClass = Trainer
    engine = "detectron2 DefaultTrainer" if args.engine == "detectron2" else "aeroseg (own training loop)"
    logger.info("Engine: %s", engine)

    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            logger.warning("--eval-only without MODEL.WEIGHTS: evaluating the model as built (pretrained "
                           "parts only, the rest randomly initialised)")
        model = build_model(cfg)
        # A model trained with another number of training classes evaluates fine.
        AerOSegCheckpointer(model, cfg.OUTPUT_DIR, ignore_prefixes=TRAINING_ONLY_PREFIXES).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        try:
            return TrainerClass.test(cfg, model)
        except KeyboardInterrupt:
            raise Interrupted(interruption_message(cfg, evaluating=True)) from None

    trainer = TrainerClass(cfg)
    trainer.resume_or_load(resume=args.resume)
    try:
        return trainer.train()
    except KeyboardInterrupt:
        iteration = getattr(trainer, "iter", None)
        raise Interrupted(interruption_message(cfg, iteration=iteration, max_iter=trainer.max_iter)) from None


def run(argv=None) -> int:
    parser = default_argument_parser()
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    cfg = None
    try:
        if args.launcher != "none":  # submitit: SLURM, or this machine (docs/CLUSTER.md)
            if args.overwrite and args.resume:
                raise ConfigError("--overwrite deletes the run that --resume would continue: pass one of them")
            return submit_training(args, parser)
        check_launcher(args)  # no job options without a job
        args.num_gpus = 1 if args.num_gpus is None else args.num_gpus
        check_arguments(args)
        if world_size_of(args) > 1 and "LOCAL_RANK" not in os.environ:
            # one-line errors for the config, the datasets and the output folder before processes are spawned
            cfg = setup(args)
            check_datasets(cfg, train=not args.eval_only)
            precheck_output_dir(cfg, args)
            logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # its "Terminating process"
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except Interrupted as exc:
        if comm.is_main_process():
            print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AerOSegError as exc:
        if comm.is_main_process():
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in the launcher of several processes
        text = interruption_message(cfg) if cfg is not None else (
            "stopped by Ctrl-C before training started; run the same command again")
        print(f"interrupted: {text}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from torch.multiprocessing import ProcessExitedException

        if isinstance(exc, ProcessExitedException) and exc.exit_code == 2:
            return 2  # a spawned process printed its one-line error
        raise
    return 0


if __name__ == "__main__":
    sys.exit(run())
