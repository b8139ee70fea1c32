"""Stop a training run at an iteration boundary when its scheduler asks (preemption, time limit).

A job that a scheduler may stop (a submitit job, :mod:`aeroseg.engine.submit`) installs a
:class:`StopSignalHandler` for the scheduler's signal. What the signal does depends on where the
run is:

* inside the training iterations (the trainer's :func:`stop_window`): nothing at once. The
  request is remembered, and after the current iteration every process asks
  :meth:`StopWindow.requested` (a collective, so all ranks stop after the same iteration); the
  trainer then saves the whole training state of that iteration, the checkpoint ``--resume``
  continues exactly, and raises :class:`TrainingInterrupted`; the job hands over to the
  scheduler (:meth:`StopSignalHandler.hand_over`, e.g. submitit's requeue);
* anywhere else (building the model, resuming, after ``model_final`` is saved, evaluation-only
  runs): the handover happens at once. Nothing is lost: what is on disk is complete and the next
  attempt redoes at most an evaluation.

A plain run (no handler installed) is unchanged: :meth:`StopWindow.requested` is ``False``
without any communication.
"""
import logging
import os
import signal
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist

from ..utils import comm

__all__ = ["StopSignalHandler", "StopWindow", "TrainingInterrupted", "installed", "stop_window"]

logger = logging.getLogger("aeroseg")

# The handler of this process while a job runs (installed()).
_ACTIVE: Optional["StopSignalHandler"] = None


class TrainingInterrupted(Exception):
    """Raised by a trainer after it saved the training state of ``iteration`` on a stop request."""

    def __init__(self, iteration: int, checkpoint: str):
        super().__init__(f"training stopped on request after iteration {iteration} ({checkpoint} saved)")
        self.iteration = iteration
        self.checkpoint = checkpoint


class StopSignalHandler:
    """Defers ``signum`` while the trainer's stop window is open; otherwise hands over at once.

    ``hand_over(signum, frame)`` is what the scheduler's own handler does (for submitit: call the
    job's ``checkpoint()``, requeue, exit); on the main process it is expected not to return.
    """

    def __init__(self, signum: int, hand_over: Callable):
        self.signum = signum
        self._hand_over = hand_over
        self.pending: Optional[int] = None
        self.deferring = False
        self.handing_over = False
        self._pid = os.getpid()
        self._previous = None

    def install(self) -> None:
        self._previous = signal.signal(self.signum, self._on_signal)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _on_signal(self, signum, frame) -> None:
        if os.getpid() != self._pid or self.handing_over:  # a forked data-loader worker; a repeated signal
            return
        if self.deferring:
            if self.pending is None:
                logger.info("Received %s: the run stops after the current iteration (checkpoint, then requeue)",
                            signal.Signals(signum).name)
            self.pending = signum
            return
        logger.info("Received %s: handing over to the scheduler now (the run's files on disk are complete)",
                    signal.Signals(signum).name)
        self.hand_over(signum, frame, synchronize=False)

    def hand_over(self, signum: Optional[int] = None, frame=None, synchronize: bool = True) -> None:
        """Let the scheduler act (checkpoint submission, requeue, exit), then end this process.

        ``synchronize``: all ranks call this together (after :class:`TrainingInterrupted`); the
        main process hands over first, the others leave only after it did, so that none of them
        ends the job before it is requeued.
        """
        signum = signum or self.pending or self.signum
        self.handing_over = True
        if comm.is_main_process():
            try:
                self._hand_over(signum, frame)  # submitit: requeues and raises SystemExit
            finally:
                if synchronize:
                    comm.synchronize()
            raise SystemExit(0)  # a hand-over that returned: nothing else to do in this attempt
        self._hand_over(signum, frame)  # submitit: logs that only the main task requeues
        if synchronize:
            comm.synchronize()
        raise SystemExit(0)


@contextmanager
def installed(handler: StopSignalHandler) -> Iterator[StopSignalHandler]:
    """Install ``handler`` for this process for the duration of the block."""
    global _ACTIVE
    handler.install()
    _ACTIVE = handler
    try:
        yield handler
    finally:
        _ACTIVE = None
        handler.uninstall()


class StopWindow:
    """The trainer's iterations: stop requests wait for an iteration boundary (module docstring)."""

    def __init__(self, handler: Optional[StopSignalHandler]):
        self.handler = handler

    def __enter__(self) -> "StopWindow":
        if self.handler is not None:
            self.handler.deferring = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self.handler is not None:  # TrainingInterrupted (the job hands over) or a failure
            self.handler.deferring = False

    def requested(self) -> bool:
        """Whether a stop was requested on any process (the same answer on every rank)."""
        if self.handler is None:
            return False
        flag = self.handler.pending is not None
        if comm.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
                else torch.device("cpu")
            value = torch.tensor([int(flag)], device=device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            flag = bool(value.item())
        return flag

    def close(self) -> None:
        """The training state is on disk (``model_final``): from now on a stop request hands over
        at once, and one received during the last iteration does so now (on every rank together:
        call this at the same point on all of them)."""
        handler = self.handler
        if handler is None or not handler.deferring:
            return
        if self.requested():
            logger.info("Stop requested during the last iteration: model_final is saved, handing over now")
            handler.deferring = False
            handler.hand_over(handler.pending, None, synchronize=True)
        handler.deferring = False


def stop_window() -> StopWindow:
    """The window a trainer opens around its iterations (a no-op one outside a scheduler's job)."""
    return StopWindow(_ACTIVE)
