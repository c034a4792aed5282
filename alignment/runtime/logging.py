"""Main-process logging and quiet third-party output, so a run's terminal shows our progress only."""

from __future__ import annotations

import logging
import os
import sys
import warnings

_LOGGER = logging.getLogger("rlhf")


def setup(main_process: bool = True) -> logging.Logger:
    """Configure the `rlhf` logger: INFO on the main process, warnings only elsewhere."""
    if not _LOGGER.handlers:
        handler = _BarAwareHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
        _LOGGER.addHandler(handler)
        _LOGGER.propagate = False
    _LOGGER.setLevel(logging.INFO if main_process else logging.WARNING)
    quiet_libraries()
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


def quiet_libraries() -> None:
    # transformers/datasets print a bar per file written or loaded; on a tiny model that is most of
    # the terminal. Our own tqdm bars show the work that takes time.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    # datasets reads these when it is imported; importing it here only to quiet it would cost every stage
    # process most of a second, and most stages never load a dataset folder
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    if "datasets" in sys.modules:
        datasets = sys.modules["datasets"]
        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # "Removed shared tensor" on every save
    warnings.filterwarnings("ignore", message=".*torch.utils.checkpoint.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


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
