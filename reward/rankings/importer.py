"""`rlhf rank import`: tasks that did not come from `rlhf sample`, to rank, re-rank or audit.

Accepted rows (jsonl/json/parquet/csv files or a `datasets` folder, read by alignment.common.data):
- completions: {"prompt", "completions": [text, or {"text", "model"}], "models"?: [names], "meta"?: {...}};
  completions from other models, with their names shown to annotators when show_models=true;
- pairwise (TRL): {"prompt", "chosen", "rejected"} (strings or message lists): a K = 2 task;
- kwise (our export): {"prompt", "completions", "ranks", "annotator"?, "task_id"?}: the earlier ranks and
  annotator go into the task's meta (`source_ranks`), so a re-ranking can be compared with them.
Any row may carry a `priority` (a finite number; default the `priority` key, 0): the ranking app serves
tasks of higher priority first. Gold tasks (known answer): with gold=true every row, otherwise rows with
`"gold": true`; their `ranks` (pairwise rows: chosen first) are the answer, kept apart from the task and never
shown or exported; they are mixed into annotators' queues at the ranking app's gold_rate.
Prompts are strings or message lists; conversational completions ([{"role": "assistant", "content"}])
become their text. The same rules as `rlhf sample`: a task whose completions are not distinct non-empty
texts (an empty one, or the same text twice) is skipped and counted, and a task already in the store (same prompt and
completion texts, in any order) is not added twice. Every row is checked before anything is written;
a bad row is one line naming file:row, and then nothing is imported (one transaction).
"""

from __future__ import annotations

import math

from alignment.common.data import load_rows
from alignment.common.errors import UserError
from reward.preference import check_ranks, distinct_and_nonempty
from reward.rankings.config import ImportConfig
from reward.rankings.store import canonical_prompt, open_store, task_key
from reward.rankings.store.quality import gold_task

FORMATS = ("completions", "pairwise", "kwise")
SKIPPED = "an empty completion or the same completion twice"


def detect_format(row: dict, where: str) -> str:
    if "chosen" in row and "rejected" in row:
        return "pairwise"
    if "completions" in row:
        return "kwise" if "ranks" in row else "completions"
    raise UserError(f"{where}: cannot tell the format (expected 'completions', or 'chosen' and 'rejected')")


def _text(value, where: str, what: str) -> str:
    """A completion's text: a string, {"text"/"content"}, or an assistant message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text", value.get("content")), str):
        return value.get("text", value.get("content"))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value)
    ):
        return "".join(m["content"] for m in value if m.get("role", "assistant") == "assistant")
    raise UserError(
        f"{where}: {what} must be a string, {{'text': ...}} or assistant messages, got {type(value).__name__}"
    )


def _prompt(row: dict, where: str):
    prompt = row.get("prompt")
    if not isinstance(prompt, (str, list)) or not prompt:
        raise UserError(f"{where}: expected a non-empty 'prompt' (string or messages)")
    try:
        canonical_prompt(prompt)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return prompt


def task_from_row(row: dict, fmt: str, where: str, cfg: ImportConfig) -> dict:
    """One store task ({"prompt", "completions", "meta"}) from one row, or UserError naming `where`."""
    prompt = _prompt(row, where)
    meta = {"source": cfg.path, "tag": cfg.tag, "format": fmt}
    if cfg.show_models:
        meta["show_models"] = True
    if fmt == "pairwise":
        texts = [_text(row["chosen"], where, "'chosen'"), _text(row["rejected"], where, "'rejected'")]
        meta["source_ranks"] = [1, 2]
        models = [""] * 2
    else:
        items = row.get("completions")
        if not isinstance(items, list) or len(items) < 2:
            raise UserError(f"{where}: 'completions' must be a list of at least 2 items")
        texts = [_text(c, where, f"completion {i}") for i, c in enumerate(items)]
        names = row.get("models")
        if names is not None and (not isinstance(names, list) or len(names) != len(items)):
            raise UserError(f"{where}: 'models' must be a list with one name per completion")
        models = [
            str(names[i]) if names else str(c.get("model", "")) if isinstance(c, dict) else ""
            for i, c in enumerate(items)
        ]
        if fmt == "kwise":
            ranks = check_ranks(row.get("ranks"), len(items), where)
            meta.update(source_ranks=list(ranks), source_annotator=str(row.get("annotator", "")))
    if isinstance(row.get("meta"), dict) and fmt == "completions":
        meta["row_meta"] = row["meta"]
    completions = [{"text": t, "model": m} for t, m in zip(texts, models)]
    task = {"prompt": prompt, "completions": completions, "meta": meta, "priority": _priority(row, where, cfg)}
    if cfg.gold or row.get("gold") is True:
        if fmt == "completions":
            raise UserError(f"{where}: a gold row needs its known answer: 'ranks' (or 'chosen' and 'rejected')")
        # The answer lives only in gold_answers: not in the meta, where an earlier ranking would otherwise go.
        meta.pop("source_ranks", None)
        meta.pop("source_annotator", None)
        return gold_task({**task, "ranks": [1, 2] if fmt == "pairwise" else row["ranks"]}, f"{where}: ")
    return task


def _priority(row: dict, where: str, cfg: ImportConfig) -> float:
    value = row.get("priority")
    if value is None:
        return cfg.priority
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: 'priority' must be a finite number, got {str(value)[:40]!r}")
    return float(value)


def usable(task: dict) -> bool:
    """`rlhf sample`'s rule: no completion empty, no two the same (a duplicate card cannot be ranked honestly)."""
    return distinct_and_nonempty([c["text"] for c in task["completions"]])


def read_tasks(cfg: ImportConfig) -> tuple[list[dict], int]:
    """(tasks to add, rows skipped as unusable); UserError on the first bad row."""
    rows = load_rows(cfg.path, cfg.split, cfg.limit, key="path")
    tasks, skipped = [], 0
    for i, row in enumerate(rows, start=1):
        where = f"{cfg.path}:{i}"
        fmt = detect_format(row, where) if cfg.format == "auto" else cfg.format
        if fmt == "pairwise" and not ("chosen" in row and "rejected" in row):
            raise UserError(f"{where}: format pairwise needs 'chosen' and 'rejected'")
        task = task_from_row(row, fmt, where, cfg)
        if usable(task):
            tasks.append(task)
        else:
            skipped += 1
    return tasks, skipped


def import_tasks(cfg: ImportConfig) -> dict:
    """Check every row, then add the tasks in one transaction; returns counts and a one-line summary."""
    tasks, skipped = read_tasks(cfg)
    keys = {task_key(t["prompt"], [c["text"] for c in t["completions"]]) for t in tasks}
    duplicates_in_file = len(tasks) - len(keys)
    if cfg.dry_run:
        new = len(keys)
        summary = f"dry run: {len(tasks)} tasks would be imported ({duplicates_in_file} repeated in the file), {skipped} skipped"
        return {"tasks": len(tasks), "new": new, "skipped": skipped, "summary": summary}
    if not tasks:
        raise UserError(f"{cfg.path}: no usable rows ({skipped} skipped: {SKIPPED})")
    store = open_store(cfg.store, create=True)
    try:
        before = store.count_tasks()
        store.add_tasks(tasks)
        new = store.count_tasks() - before
    finally:
        store.close()
    gold = sum("gold" in t for t in tasks)
    summary = (
        f"imported {new} new tasks from {cfg.path} ({len(tasks) - new} already in the store or repeated; "
        f"{skipped} skipped: {SKIPPED})" + (f"; {gold} rows are gold tasks" if gold else "")
    )
    return {"tasks": len(tasks), "new": new, "skipped": skipped, "summary": summary}
