"""Command line, logging and reproducibility set-up shared by the tools (detectron2's flags)."""
import argparse
import logging
import os
import random
import sys
from typing import List, Optional

import numpy as np
import torch

from ..utils import comm
from ..utils.cpu_allocator import configure_cpu_allocator
from ..utils.errors import AerOSegError, OutputDirError, describe_exception
from ..utils.io import is_temp_name, write_text_atomic
from .output_lock import acquire_output_dir_lock

__all__ = ["default_argument_parser", "default_setup", "draw_seed", "seed_all_rng", "setup_logger", "rng_state",
           "set_rng_state", "all_ranks_rng_state", "restore_rng_state"]


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` flags, plus ``--engine``."""
    parser = argparse.ArgumentParser(
        epilog=epilog or (
            "Examples:\n"
            "  python tools/train_net.py --config-file configs/demo/tiny_cpu.yaml\n"
            "  python tools/train_net.py --config-file configs/isaid/aeroseg_vitb.yaml --num-gpus 4\n"
            "  python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS output/model_final.pth\n"
            "  python tools/train_net.py --config-file cfg.yaml --resume   # continue from OUTPUT_DIR/last_checkpoint"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration, RNG)")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS on DATASETS.TEST")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs per machine (processes)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    port = 2 ** 15 + 2 ** 14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2 ** 14
    parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}",
                        help="initialization URL for torch.distributed (the first machine's address)")
    parser.add_argument("--overwrite", action="store_true",
                        help="OUTPUT_DIR holds another run: delete its outputs (checkpoints, results, metrics, "
                             "logs, config.yaml) and start this run there")
    parser.add_argument("--allow-config-changes", action="store_true",
                        help="with --resume: accept config changes that do not change the trained weights "
                             "(TEST.*, DATASETS.TEST, periods, workers, device); others are always refused")
    parser.add_argument("--engine", choices=["aeroseg", "detectron2"], default="aeroseg",
                        help="training loop: AerOSeg's own (default) or detectron2's DefaultTrainer "
                             "(needs detectron2 installed)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100")
    return parser


def setup_logger(output_dir: Optional[str] = None, name: str = "aeroseg") -> logging.Logger:
    """Console (main process) + ``OUTPUT_DIR/log.txt`` (``log.txt.rank<r>`` elsewhere)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    rank = comm.get_rank()
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def draw_seed() -> int:
    """A random seed in [0, 2**31) from the OS."""
    return int.from_bytes(os.urandom(4), "little") % 2 ** 31


def seed_all_rng(seed: Optional[int] = None) -> int:
    """Seed Python, NumPy and torch (all devices); a negative/None seed draws one. Returns it."""
    if seed is None or seed < 0:
        seed = draw_seed()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def rng_state() -> dict:
    """Python / NumPy / torch RNG states as tensors and numbers (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "python": torch.tensor(py_state[1], dtype=torch.int64),
        "python_gauss": py_state[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_ranks_rng_state() -> List[dict]:
    """Every process' :func:`rng_state`, in rank order (a collective call: all ranks must make it)."""
    return comm.all_gather_object(rng_state())


def restore_rng_state(checkpoint: dict) -> None:
    """Restore this process' RNG states from a checkpoint's ``rng_all_ranks`` (else its ``rng``).

    A run resumed on another number of processes cannot continue every stream exactly: rank 0's
    state is restored everywhere then, with a warning.
    """
    states = checkpoint.get("rng_all_ranks")
    rank, world = comm.get_rank(), comm.get_world_size()
    if isinstance(states, (list, tuple)) and len(states) == world:
        set_rng_state(states[rank])
        return
    if "rng" in checkpoint:
        set_rng_state(checkpoint["rng"])
    if world > 1 and comm.is_main_process():
        saved = len(states) if isinstance(states, (list, tuple)) else 1
        logging.getLogger("aeroseg").warning(
            "Resuming on %d processes a checkpoint with the RNG states of %d: each process continues from "
            "rank 0's state, so random draws outside the data pipeline differ from an uninterrupted run",
            world, saved)


def _remove_stale_temp_checkpoints(output_dir: str, logger: logging.Logger) -> None:
    """Delete the temporary files of checkpoint saves that a killed run left behind (``*.pth.tmp.*``).

    Only called while this run holds the output-folder lock, so no other process is saving there.
    """
    stale = [n for n in os.listdir(output_dir) if is_temp_name(n) and n.endswith(".pth")]
    for name in stale:
        os.remove(os.path.join(output_dir, name))
    if stale:
        logger.info("Removed %d temporary checkpoint file(s) of an interrupted save: %s", len(stale),
                    ", ".join(sorted(stale)[:3]))


def default_setup(cfg, args) -> logging.Logger:
    """Create and lock OUTPUT_DIR, claim it for this run, set up logging, write the merged config,
    fix the seed and seed every RNG.

    The main process holds an advisory lock on OUTPUT_DIR (:mod:`.output_lock`) from here until
    :func:`release_output_dir_lock`, so a second run into the same folder fails at once. Then
    :func:`~aeroseg.engine.run_folder.claim_run_folder` checks, before anything in the folder is
    written, that the folder is unused or holds this very run (``--resume`` with the same config),
    or clears it (``--overwrite``). ``SEED < 0`` becomes a drawn seed (the resumed run's, on
    ``--resume``), the same on every process and written into ``config.yaml``.
    """
    from .run_folder import RECORD_NAME, claim_run_folder, resolve_seed

    output_dir = cfg.OUTPUT_DIR
    configured_seed = cfg.SEED
    lock = claim = None
    failure = seed = None
    if comm.is_main_process():
        try:
            if output_dir:
                try:
                    os.makedirs(output_dir, exist_ok=True)
                except OSError as exc:
                    raise OutputDirError(f"cannot create OUTPUT_DIR {output_dir} ({describe_exception(exc)}): "
                                         f"choose a writable OUTPUT_DIR") from None
                lock = acquire_output_dir_lock(output_dir)
                claim = claim_run_folder(cfg, resume=bool(getattr(args, "resume", False)),
                                         eval_only=bool(getattr(args, "eval_only", False)),
                                         overwrite=bool(getattr(args, "overwrite", False)),
                                         allow_changes=bool(getattr(args, "allow_config_changes", False)))
            seed = resolve_seed(cfg, claim)
        except AerOSegError as exc:
            failure = exc
        except OSError as exc:  # e.g. --overwrite could not delete a file
            failure = OutputDirError(f"OUTPUT_DIR {output_dir}: {describe_exception(exc, with_type=True)}")
    # every process learns the outcome: a refusal ends them all alike (no process dies waiting)
    message, seed = comm.broadcast_object((None if failure is None else str(failure), seed))
    if failure is not None:
        failure.reported_by_main = True
        raise failure
    if message is not None:  # (the main process' error, re-raised here)
        error = OutputDirError(message)
        error.reported_by_main = True
        raise error
    if seed != cfg.SEED:
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.SEED = seed
        if frozen:
            cfg.freeze()
    comm.synchronize()
    logger = setup_logger(output_dir)
    if lock is not None and lock.stale_holder:
        logger.warning("Took over the lock of a run on this OUTPUT_DIR that did not end cleanly (%s)",
                       lock.stale_holder)
        lock.stale_holder = None
    logger.info("Rank %d of %d; command line: %s", comm.get_rank(), comm.get_world_size(), " ".join(sys.argv))
    if getattr(args, "launch_info", None):  # a submitted job: which one (aeroseg.engine.submit)
        logger.info("%s", args.launch_info)
    logger.info("torch %s, CUDA available: %s", torch.__version__, torch.cuda.is_available())
    if getattr(args, "config_file", ""):
        logger.info("Config file %s", args.config_file)
    if claim is not None and claim.removed:
        logger.info("--overwrite: deleted the earlier run's outputs in %s: %s", output_dir, ", ".join(claim.removed))
    if claim is not None and claim.accepted_changes:
        logger.info("--allow-config-changes: accepted changes of %s", ", ".join(claim.accepted_changes))
    if comm.is_main_process() and output_dir:
        _remove_stale_temp_checkpoints(output_dir, logger)
        path = os.path.join(output_dir, RECORD_NAME)
        if claim is None or claim.write_record:
            try:
                write_text_atomic(path, cfg.dump())
            except OSError as exc:
                raise OutputDirError(f"cannot write {path} ({describe_exception(exc)}): choose a writable "
                                     f"OUTPUT_DIR with free space") from None
            logger.info("Full config saved to %s", path)
        else:
            logger.info("Evaluating the run recorded in %s (left unchanged)", path)
    seed_all_rng(cfg.SEED + comm.get_rank())
    logger.info("Seed: %d%s", cfg.SEED, "" if configured_seed >= 0 else
                " (SEED < 0: drawn for this run, or the resumed run's; recorded in config.yaml)")
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    if str(cfg.MODEL.DEVICE).startswith("cpu") and configure_cpu_allocator(cfg.CPU_ALLOCATOR):
        logger.info("CPU_ALLOCATOR=retain: freed memory stays in the process (see docs/PERFORMANCE.md)")
    return logger
