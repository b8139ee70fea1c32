"""Start one process per GPU on one or several machines (torch.distributed), or under torchrun.

Where detectron2 is installed, every process also gets detectron2's per-machine ("local") process
group, which its ``launch()`` creates and its trainer, DDP wrapper and evaluators ask for
(``comm.get_local_rank()``); so ``--engine detectron2`` runs on several GPUs and under torchrun.
"""
import logging
import os
from datetime import timedelta
from typing import Callable, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..compat import create_local_process_group, forget_local_process_group

__all__ = ["launch"]

logger = logging.getLogger("aeroseg")


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _destroy_process_groups() -> None:
    forget_local_process_group()
    dist.destroy_process_group()


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "", args: Tuple = (), timeout: timedelta = timedelta(minutes=30)):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine x num_machines`` processes.

    * one process in total: run directly (no process group);
    * started by ``torchrun`` (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` set): join its group;
    * otherwise spawn ``num_gpus_per_machine`` processes here, with global ranks
      ``machine_rank * num_gpus_per_machine + local_rank``, meeting at ``dist_url``.
    """
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and "LOCAL_RANK" in os.environ:
        local_rank = int(os.environ["LOCAL_RANK"])
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(_backend(), init_method="env://", timeout=timeout)
        try:
            create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
            return main_func(*args)
        finally:
            _destroy_process_groups()
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if num_machines > 1 and dist_url.startswith("tcp://127.0.0.1"):
        raise ValueError("--dist-url must be the first machine's reachable address when --num-machines > 1")
    mp.start_processes(_worker, nprocs=num_gpus_per_machine, start_method="spawn",
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout))


def _worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if torch.cuda.is_available():
        if num_gpus_per_machine > torch.cuda.device_count():
            raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are visible")
        torch.cuda.set_device(local_rank)
    os.environ["LOCAL_RANK"] = str(local_rank)
    dist.init_process_group(_backend(), init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout)
    try:
        create_local_process_group(num_gpus_per_machine)
        dist.barrier()
        main_func(*args)
    finally:
        _destroy_process_groups()
