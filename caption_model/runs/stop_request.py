"""Ctrl-C during training: stop between steps, save, and say how to resume."""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)


class StopRequest:
    """Ctrl-C while training: the first asks the loop to stop after the current step and save; a second stops at once.

    Stopping between steps is what makes the saved checkpoint exact to resume
    (an interrupt inside a step would leave the optimiser and schedule out of
    step). Signal handlers can only be set in the main thread; elsewhere this
    does nothing and Ctrl-C behaves as before.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupted: saving a checkpoint after this step (Ctrl-C again to stop at once)")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which finishes its step and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
