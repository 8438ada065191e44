"""Signals for long-running subcommands: SIGTERM handled as the first Ctrl-C, and a block of file writes
that an interruption cannot cut in two.

``timeout 60 cnnkit train`` and a batch scheduler stop a job with SIGTERM. While :func:`cnnkit.training.fit`
runs, the first Ctrl-C (SIGINT) asks it to stop after the current step and keep everything; a second one
stops at once. :func:`sigterm_as_sigint` makes SIGTERM do exactly what SIGINT does at that moment (it
calls the SIGINT handler in force), so both stop training the same clean way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """For the block, SIGTERM runs the SIGINT handler in force (fit's, or Python's KeyboardInterrupt)."""
    if not _main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        current = signal.getsignal(signal.SIGINT)
        if callable(current):
            current(signum, frame)  # fit names the signal it got
        elif current != signal.SIG_IGN:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during the block (a set of files written together); one that arrives is
    honoured when the block ends, as a KeyboardInterrupt."""
    if not _main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt
