"""What the quickstart shows on the console (one line per stage) and where everything else goes.

* :class:`Console` writes the stage lines: on a terminal one line per stage, rewritten in place;
  elsewhere (a log, a pipe, a notebook) the line is printed again at most every ``interval``
  seconds, and once when the stage ends.
* :func:`output_to_log` sends everything else to the run's log file while the pipeline runs:
  log records (ours and Lightning's: model summaries, "GPU available", ...), Python warnings
  (third-party deprecations included), and whatever the steps print to stdout or stderr.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Iterator

#: Loggers that Lightning gives their own console handlers; while the log file is active they
#: lose those handlers and pass their records to the root logger (and so to the file).
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Console:
    """Stage lines on ``stream`` (default: the stdout of the moment it is made, before any redirection)."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 30.0) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.interval = float(interval)
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self._last_print = float("-inf")
        self._in_place = False  # a terminal line is showing that has not ended yet

    def show(self, text: str, final: bool = False) -> None:
        """Show ``text`` as the current stage's line; ``final`` ends that line."""
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
            self._in_place = not final
        elif final or now - self._last_print >= self.interval:
            self.stream.write(text + "\n")
        else:
            return
        self.stream.flush()
        self._last_print = now

    def close_line(self) -> None:
        """End a terminal line left open (before anything else is written)."""
        if self._in_place:
            self.stream.write("\n")
            self.stream.flush()
            self._in_place = False


@contextlib.contextmanager
def output_to_log(path: str | Path) -> Iterator[IO[str]]:
    """Within the block, log records, warnings and stdout/stderr writes go to the file ``path`` (appended)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_lightning = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
                       for name in LIGHTNING_LOGGERS}
    with open(path, "a", encoding="utf-8", buffering=1) as handle, warnings.catch_warnings():
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        for name in LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = []
            logger.propagate = True
        warnings.simplefilter("default")  # each warning once per place, into the log
        logging.captureWarnings(True)
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield handle
        finally:
            logging.captureWarnings(False)
            root.handlers, level = saved_root
            root.setLevel(level)
            for name, (handlers, propagate) in saved_lightning.items():
                logger = logging.getLogger(name)
                logger.handlers = handlers
                logger.propagate = propagate
            handler.flush()
