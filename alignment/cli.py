"""`rlhf <command> [CONFIG.yaml] [key=value ...]`: one entry point for every stage.

Each command lives in its own module with a `main(argv) -> int`; this file only dispatches, so
`rlhf --help` stays fast (no torch import) and a user mistake anywhere becomes one line on stderr
and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

from alignment.config import OUTPUT_DIRS, UserError, describe, load_config

COMMANDS = {
    "sft": ("alignment.sft", "supervised fine-tuning (stage 1)"),
    "sample": ("reward.rankings.sampling", "sample K completions per prompt into the ranking store (stage 2)"),
    "rank": ("reward.rankings.app.cli", "ranking app: serve | status | export | import | annotate | users (stage 2)"),
    "reward": ("reward.train", "train the reward model on rankings (stage 3)"),
    "dpo": ("alignment.dpo.train", "DPO / IPO / listwise Plackett-Luce DPO on the rankings (policy adapter)"),
    "ppo": ("alignment.ppo.train", "PPO against the reward model on one frozen base (stage 4)"),
    "pipeline": ("alignment.pipeline", "run every stage in order from one config"),
    "eval": ("alignment.evaluate", "compare policies: reward, win rate, KL, length"),
    "bon": ("alignment.bon", "best-of-N: a policy's samples, the reward model's best of each N, as SFT rows"),
    "demo": ("alignment.demo", "the whole pipeline on the embedded tiny default, with a report"),
}

USAGE = (
    "usage: rlhf <command> [CONFIG.yaml] [key=value ...]\n\ncommands:\n"
    + "\n".join(f"  {name:<9} {doc}" for name, (_, doc) in COMMANDS.items())
    + "\n\n`rlhf <command> --help` lists a command's config keys."
)


def parse_stage_args(prog: str, cfg_cls: type, argv: list[str], doc: str = ""):
    """Parse `[CONFIG.yaml] [key=value ...] [--help]` into a validated `cfg_cls`; None after --help."""
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: {prog} [CONFIG.yaml] [key=value ...]\n")
        if doc:
            print(doc.strip() + "\n")
        print("config keys (YAML or dotted key=value overrides):")
        print("\n".join(describe(cfg_cls)))
        return None
    path = None
    rest = list(argv)
    if rest and "=" not in rest[0]:
        path = rest.pop(0)
    for item in rest:
        if "=" not in item:
            raise UserError(f"unexpected argument '{item}': give at most one CONFIG.yaml, then key=value overrides")
    return load_config(cfg_cls, path, rest)


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown command '{name}'{hint} (see rlhf --help)")
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserError(f"command '{name}' is not available in this version") from None
        raise
    return module.main(rest) or 0


# A full disk, a read-only mount or a folder the user may not write: the user's to fix, so one line, not a traceback.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def write_error_line(e: OSError) -> str:
    """One line naming the folder a write failed in (the command's output folder when the OS did not say)."""
    target = str(e.filename or (OUTPUT_DIRS[-1] if OUTPUT_DIRS else "the output folder"))
    folder = target if not e.filename or os.path.isdir(target) else os.path.dirname(target) or "."
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "" if target == folder else f" while writing {target}"
        return f"{folder}: no space left on the device (or quota){what}; free space and rerun (checkpoint.resume=auto)"
    if e.errno == errno.EROFS:
        return f"{folder}: read-only file system; choose a writable output_dir"
    return f"{folder}: permission denied writing {target}; choose a writable output_dir"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = run(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        print(f"error: {write_error_line(e)}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # `rlhf sft --help | head`
        code = 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
