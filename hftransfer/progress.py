"""How the kit shows progress: bars (tqdm) where they render — a terminal or a notebook —, plain
log lines elsewhere (a log file, CI, a pipe: carriage-return bars turn into noise there), and
neither when the kit's logger is set to WARNING (``hftransfer --quiet``, or
``logging.getLogger("hftransfer").setLevel(logging.WARNING)`` from Python)."""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

logger = logging.getLogger("hftransfer")


def quiet() -> bool:
    """Whether progress is turned off: the kit's logger explicitly set to WARNING or above."""
    return logger.level >= logging.WARNING


def show_bars() -> bool:
    """Whether progress shows as bars: stderr is a terminal (or this is a notebook) and
    progress is not turned off."""
    if quiet():
        return False
    if "ipykernel" in sys.modules:  # tqdm.auto draws notebook widgets there
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Lines:
    """Progress of a loop of ``total`` items as log lines (INFO, logger ``hftransfer``), at most
    one every ``every`` seconds and one at the end; for places where a bar cannot render."""

    def __init__(self, what: str, total: int, every: float = 30.0):
        self.what, self.total, self.every = what, total, every
        self.started = self.last = time.monotonic()
        self.done = 0

    def update(self, n: int = 1) -> None:
        """``n`` more items done: a line when ``every`` seconds passed since the last one, or at the end."""
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self.last >= self.every:
            self.last = now
            logger.info("%s", self.line(now))

    def line(self, now: float) -> str:
        """``WHAT: DONE/TOTAL (P%), ELAPSED elapsed, about LEFT left``."""
        elapsed = now - self.started
        shown = f"{self.what}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), " \
                f"{duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            shown += f", about {duration(elapsed / self.done * (self.total - self.done))} left"
        return shown


@contextmanager
def data_bars():
    """``datasets``' own bars (Tokenizing ...) only where bars render; restored afterwards."""
    import importlib

    data_tqdm = importlib.import_module("datasets.utils.tqdm")  # (datasets.utils.tqdm is also a class)
    turn_off = not show_bars() and not data_tqdm.are_progress_bars_disabled()
    if turn_off:
        data_tqdm.disable_progress_bars()
    try:
        yield
    finally:
        if turn_off:
            data_tqdm.enable_progress_bars()
