"""Command line, logging and reproducibility set-up shared by the tools (detectron2's flags)."""
import argparse
import logging
import os
import random
import sys
from typing import Optional

import numpy as np
import torch

from ..utils import comm
from ..utils.cpu_allocator import configure_cpu_allocator
from ..utils.errors import OutputDirError, describe_exception
from ..utils.io import is_temp_name, write_text_atomic
from .output_lock import acquire_output_dir_lock

__all__ = ["default_argument_parser", "default_setup", "seed_all_rng", "setup_logger", "rng_state", "set_rng_state"]


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


def seed_all_rng(seed: Optional[int] = None) -> int:
    """Seed Python, NumPy and torch (all devices); a negative/None seed draws one. Returns it."""
    if seed is None or seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") % 2 ** 31
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
    """Create and lock OUTPUT_DIR, set up logging, write the merged config, seed every RNG.

    The main process holds an advisory lock on OUTPUT_DIR (:mod:`.output_lock`) from here until
    :func:`release_output_dir_lock`, so a second run into the same folder fails at once.
    """
    output_dir = cfg.OUTPUT_DIR
    lock = None
    if comm.is_main_process() and output_dir:
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as exc:
            raise OutputDirError(f"cannot create OUTPUT_DIR {output_dir} ({describe_exception(exc)}): "
                                 f"choose a writable OUTPUT_DIR") from None
        lock = acquire_output_dir_lock(output_dir)
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
    if comm.is_main_process() and output_dir:
        _remove_stale_temp_checkpoints(output_dir, logger)
        path = os.path.join(output_dir, "config.yaml")
        try:
            write_text_atomic(path, cfg.dump())
        except OSError as exc:
            raise OutputDirError(f"cannot write {path} ({describe_exception(exc)}): choose a writable "
                                 f"OUTPUT_DIR with free space") from None
        logger.info("Full config saved to %s", path)
    seed = seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    logger.info("Seed: %d", seed)
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    if str(cfg.MODEL.DEVICE).startswith("cpu") and configure_cpu_allocator(cfg.CPU_ALLOCATOR):
        logger.info("CPU_ALLOCATOR=retain: freed memory stays in the process (see docs/PERFORMANCE.md)")
    return logger
