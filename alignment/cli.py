"""`rlhf <command> [CONFIG.yaml] [key=value ...]`: one entry point for every stage.

Each command is a module of alignment/commands/ named by its verb, with a `main(argv) -> int`: this file finds it
there and dispatches, so `rlhf --help` stays fast (no torch import), applies the process-wide settings a command
line may make (`alignment.runtime.cpu_tuning`, third-party quiet), and turns a user mistake anywhere into one line
on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import ast
import errno
import importlib
import logging
import os
import pkgutil
import sys
import warnings

import alignment.commands
from alignment.common.errors import UserError
from alignment.config.loader import OUTPUT_DIRS
from alignment.runtime import cpu_tuning


def commands() -> dict[str, str]:
    """{verb: what it does} for every module of alignment/commands/, from the first line of its docstring (read from
    the source, so listing them imports nothing)."""
    found = {}
    for module in sorted(pkgutil.iter_modules(alignment.commands.__path__), key=lambda m: m.name):
        path = os.path.join(alignment.commands.__path__[0], module.name + ".py")
        with open(path, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        found[module.name] = doc.splitlines()[0].partition("`: ")[2].rstrip(".") if doc else ""
    return found


def usage() -> str:
    listed = "\n".join(f"  {name:<9} {doc}" for name, doc in commands().items())
    return (
        "usage: rlhf <command> [CONFIG.yaml] [key=value ...]\n\ncommands:\n"
        + listed
        + "\n\n`rlhf <command> --help` lists a command's config keys."
    )


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    known = commands()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown command '{name}'{hint} (see rlhf --help)")
    module_name = f"alignment.commands.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserError(f"command '{name}' is not available in this version") from None
        raise
    return module.main(rest) or 0


def write_error_line(e: OSError) -> str:
    """One line naming the folder a write failed in (the command's output folder when nothing said which)."""
    target = str(e.filename or (OUTPUT_DIRS[-1] if OUTPUT_DIRS else "the output folder"))
    folder = target if not e.filename or os.path.isdir(target) else os.path.dirname(target) or "."
    what = "" if target == folder else f" while writing {target}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        # A training stage continues from its last complete checkpoint; anything else is simply rerun.
        resumable = any(os.path.isdir(os.path.join(d, "checkpoints")) for d in OUTPUT_DIRS)
        rerun = "rerun with checkpoint.resume=auto" if resumable else "rerun"
        return f"{folder}: no space left on the device (or quota){what}; free space and {rerun}"
    if e.errno == errno.EROFS:
        return f"{folder}: read-only file system{what}; choose a writable folder"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{folder}: permission denied{what}; choose a folder you may write"
    return f"{folder}: {e.strerror.lower() if e.strerror else 'write failed'}{what}; check the disk and rerun"


QUIET_ENV = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # a bar per dataset saved or loaded: most of `rlhf rank export`
    "DATASETS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' bar per file loaded: on a tiny model, most of the terminal
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # the fork warning of tokenizers once the ranking server or a loader forks
}
"""Third-party settings the command line starts with; a value the user already set in the environment wins."""


def quiet_third_party() -> None:
    """Keep third-party chatter out of a command's terminal: our progress bars and closing lines are the output.

    Done here, at the command-line entry point, never on import or inside a library call. DeepSpeed's logger is
    created at import with its own handler and level (so a level set beforehand is reset); a filter on it survives
    that, and drops its warnings, such as "Setting accelerator to CPU" printed inside a progress bar.
    """
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    logging.getLogger("DeepSpeed").addFilter(_errors_only)
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # "Removed shared tensor" on every save
    warnings.filterwarnings("ignore", message=".*torch.utils.checkpoint.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cpu_tuning.apply(argv[0] if argv else None)  # before anything imports torch
    quiet_third_party()
    try:
        code = run(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # `rlhf sft --help | head`
        sys.stdout = open(os.devnull, "w")  # the interpreter's final flush would hit the closed pipe again
        code = 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as e:
        # A full disk, a quota, a read-only mount or a folder the user may not write, raised by whichever
        # library wrote (OSError, torch, safetensors, SQLite): the user's to fix, so one line, not a traceback.
        from alignment.common.files import disk_error

        # the OS's own file name when it gave one; else the output folder, whose free space tells a full disk
        output_dir = OUTPUT_DIRS[-1] if OUTPUT_DIRS else None
        error = disk_error(e, None if isinstance(e, OSError) and e.filename else output_dir)
        if error is None:
            raise
        print(f"error: {write_error_line(error)}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
