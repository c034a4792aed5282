"""The `rlhf` logger: main-process lines above the progress bars. (Third-party output is quieted by the command line,
`alignment.cli.quiet_third_party`, never by a library call.)"""

from __future__ import annotations

import logging
import sys

_LOGGER = logging.getLogger("rlhf")


def setup(main_process: bool = True) -> logging.Logger:
    """Configure the `rlhf` logger: INFO on the main process, warnings only elsewhere."""
    if not _LOGGER.handlers:
        handler = _BarAwareHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
        _LOGGER.addHandler(handler)
        _LOGGER.propagate = False
    _LOGGER.setLevel(logging.INFO if main_process else logging.WARNING)
    return _LOGGER


class _BarAwareHandler(logging.StreamHandler):
    """Writes each record on a line of its own above a running progress bar (tqdm clears and redraws it), so a warning
    in the middle of training is one clean line, not text glued into the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging.StreamHandler does: a broken stream must not end the run
            self.handleError(record)


def announce_builtins(log: logging.Logger, stage: str, cfg) -> None:
    """A stage's first log line says when it runs on embedded data or the embedded tiny model (never silently).

    Stages call it just before their first log line, once their inputs have loaded: a user mistake found while
    loading stays the one line on stderr."""
    from alignment.config.loader import builtins_in

    found = builtins_in(cfg)
    if found:
        log.info(f"{stage}: using built-in {', '.join(found)} (named in the config; not your own model or data)")


def get() -> logging.Logger:
    return _LOGGER
