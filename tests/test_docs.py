"""Every shell and Python block of README.md and docs/ runs in a test, or says why it cannot.

The rule, for each fenced block in a runnable language (bash, sh, console, python):
(a) no marker: this file runs it verbatim. A page's blocks run in order, in one scratch folder holding copies of
    the checkout's configs/, launch/, benchmarks/ and docs/ (so nothing is written into the checkout), with the
    installed `rlhf` first on the PATH and no network. A `console` block's `$ command` lines run and the lines
    shown after each must appear, in order, in what it prints;
(b) `<!-- tested by tests/PATH.py -->` right above it: that test exists and either contains every line of the
    block verbatim (comments aside) or names the page, because it reads the block itself (tests/e2e/test_stages.py
    runs the loading lines of docs/runs.md);
(c) `<!-- not run: REASON -->` right above it, with the reason (a GPU, the network, people, minutes of training).
Markers are HTML comments on the lines directly above the fence; a block that opens its file (the README's first
lines, a contract) takes its marker on the line directly below. Every fence names its language, so no block escapes
the rule by leaving it out. docs/tutorial.md is tests/e2e/test_tutorial.py's: that test runs each of its blocks in
order and honours the same `not run` marker.

The parsing and the rule are fast; running the blocks is marked slow.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import REPO

TUTORIAL = "docs/tutorial.md"
"""Run block by block, in order, by tests/e2e/test_tutorial.py."""
RUNNABLE = {"bash", "sh", "console", "python"}
SHOWN = {"text", "yaml", "json"}
"""Languages of blocks that are read, never run (diagrams, config excerpts, output)."""
FENCE = re.compile(r"^```(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"^<!--\s*not run:(?P<reason>.*?)-->$")
TESTED_BY = re.compile(r"^<!--\s*tested by\s+(?P<test>\S+?)\s*-->$")
COPIED = ("configs", "launch", "benchmarks", "docs")
"""What the scratch folder holds: the paths the blocks name, relative to the checkout's root."""


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    markers: list[str]

    @property
    def reason(self) -> str | None:
        """The `not run` reason ("" for a marker without one), or None when there is no such marker."""
        found = [NOT_RUN.match(m) for m in self.markers]
        return next((m["reason"].strip() for m in found if m), None)

    @property
    def tested_by(self) -> str | None:
        found = [TESTED_BY.match(m) for m in self.markers]
        return next((m["test"] for m in found if m), None)

    @property
    def runs_here(self) -> bool:
        return self.lang in RUNNABLE and self.reason is None and self.tested_by is None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def _comments(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip().startswith("<!--") and line.strip().endswith("-->")]


def parse(text: str, page: str) -> list[Block]:
    """Every fenced block of a Markdown text, with the HTML comments directly above its fence (below it for a block
    that opens the text)."""
    lines = text.split("\n")
    found = []
    for m in FENCE.finditer(text):
        first = text[: m.start()].count("\n")  # index of the opening fence's line
        last = text[: m.end()].count("\n")  # ... and of the closing fence's
        if first == 0:
            after = []
            for line in lines[last + 1 :]:
                if not _comments([line]):
                    break
                after.append(line)
            markers = _comments(after)
        else:
            above = []
            for line in reversed(lines[:first]):
                if not _comments([line]):
                    break
                above.insert(0, line)
            markers = _comments(above)
        found.append(Block(page, first + 1, m["lang"], m["code"], markers))
    return found


def pages() -> list[str]:
    """README.md and every page under docs/, as paths relative to the checkout; the tutorial is its own test's."""
    found = ["README.md"] + sorted(
        os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    )
    return [p for p in found if p != TUTORIAL]


def page_blocks(page: str) -> list[Block]:
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return parse(f.read(), page)


def code_lines(block: Block) -> list[str]:
    """The block's lines as a test would hold them: stripped, without blank lines, comment lines and trailing
    comments of shell lines."""
    out = []
    for line in block.code.splitlines():
        line = line.strip()
        if block.lang in ("bash", "sh"):
            line = re.sub(r"\s+#.*$", "", line)
        if line and not line.startswith("#"):
            out.append(line)
    return out


def rule_broken(block: Block) -> str | None:
    """Why `block` breaks the rule, or None when it follows it."""
    if not block.lang:
        return "the fence names no language (```text for output and diagrams)"
    if block.lang not in RUNNABLE | SHOWN:
        return f"unknown language '{block.lang}' (runnable: {sorted(RUNNABLE)}; shown: {sorted(SHOWN)})"
    if block.lang not in RUNNABLE:
        return None
    if block.reason is not None and block.tested_by is not None:
        return "both `not run` and `tested by`: pick one"
    if block.reason == "":
        return "a `not run` marker needs its reason"
    if block.tested_by is not None:
        path = os.path.join(REPO, block.tested_by)
        if not (block.tested_by.startswith("tests/") and block.tested_by.endswith(".py") and os.path.isfile(path)):
            return f"`tested by {block.tested_by}`: no such test file"
        with open(path, encoding="utf-8") as f:
            source = f.read()
        missing = [line for line in code_lines(block) if line not in source]
        if missing and block.page not in source:
            return f"{block.tested_by} neither holds {missing[0]!r} nor reads {block.page}"
    return None


# ----------------------------------------------------------------------------------------------
# The parsing and the rule (fast)


def test_parse_reads_languages_markers_and_lines():
    text = (
        "```bash\nfirst\n```\n<!-- not run: a contract -->\n\n# Title\n\n"
        "<!-- tested by tests/e2e/test_stages.py -->\n<!-- loading-lines -->\n```python\nx = 1\n```\n\n"
        "<!-- not run: far above -->\n\nprose\n```\nplain\n```\n"
    )
    first, second, third = parse(text, "page.md")
    assert (first.line, first.lang, first.code, first.reason) == (1, "bash", "first\n", "a contract")
    assert (second.line, second.lang, second.tested_by, second.reason) == (
        10,
        "python",
        "tests/e2e/test_stages.py",
        None,
    )
    assert third.lang == "" and third.markers == []  # a comment with prose between is not this block's marker
    assert rule_broken(third).startswith("the fence names no language")
    assert rule_broken(Block("p.md", 1, "bash", "x\n", ["<!-- not run: -->"])) == "a `not run` marker needs its reason"
    assert rule_broken(Block("p.md", 1, "pyhton", "x\n", [])).startswith("unknown language")
    assert Block("p.md", 1, "console", "$ x\n", []).runs_here and not Block("p.md", 1, "text", "x\n", []).runs_here


def test_tested_by_needs_a_test_that_holds_the_lines_or_reads_the_page():
    here = os.path.relpath(__file__, REPO)
    held = Block(
        "p.md",
        1,
        "bash",
        "cd /tmp   # a comment\n# only a comment\nparse(text, page)\n",
        [f"<!-- tested by {here} -->"],
    )
    assert code_lines(held) == ["cd /tmp", "parse(text, page)"] and rule_broken(held) is None
    # a line and a page this file does not hold (built, so that its source does not contain them either)
    line, page = " ".join(["rlhf", "no-such", "command"]), "/".join(["docs", "elsewhere.md"])
    assert "neither holds" in rule_broken(Block(page, 1, "bash", line + "\n", [f"<!-- tested by {here} -->"]))
    missing = Block("p.md", 1, "bash", "x\n", ["<!-- tested by tests/no_such_test.py -->"])
    assert "no such test file" in rule_broken(missing)


@pytest.mark.parametrize("page", pages())
def test_every_block_runs_or_says_why_not(page):
    broken = [f"{b}: {why}" for b in page_blocks(page) if (why := rule_broken(b))]
    assert not broken, "\n".join(broken)


def test_the_readme_opens_with_the_two_commands():
    """Its first lines are a contract: set up and run the demo, set up and run every test."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        head = f.read().split("\n")[:4]
    assert head[0] == "```bash" and head[3] == "```"
    assert head[1].startswith("./setup.sh && .venv/bin/rlhf demo ")
    assert head[2].startswith("./setup.sh && .venv/bin/python -m pytest ")
    assert len(open(os.path.join(REPO, "README.md"), encoding="utf-8").read().splitlines()) < 250


def test_the_readme_links_resolve():
    """mkdocs checks the docs' links (mkdocs.yml `validation`); the README lies outside the site, so here: every
    relative link names an existing file, and an anchor into a page names one of its headings."""
    from markdown.extensions.toc import slugify

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) >= 10
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = os.path.join(REPO, path)
        assert os.path.exists(target), link
        if anchor:
            with open(target, encoding="utf-8") as f:
                headings = re.findall(r"^#+\s+(.*)$", f.read(), re.M)
            assert anchor in {slugify(h, "-") for h in headings}, link


def test_the_tutorial_is_its_own_tests():
    """docs/tutorial.md is left to tests/e2e/test_tutorial.py, which runs its blocks with the same `not run` marker."""
    with open(os.path.join(REPO, "tests", "e2e", "test_tutorial.py"), encoding="utf-8") as f:
        source = f.read()
    assert '"docs", "tutorial.md"' in source and "not run:" in source
    assert any(b.runs_here for p in pages() for b in page_blocks(p))


# ----------------------------------------------------------------------------------------------
# Running the blocks (slow: each starts a Python process, most of them import torch)


def run_console(code: str, cwd: str, env: dict) -> None:
    """Each `$ command` of a console block, its output checked against the lines shown after it."""
    steps = re.split(r"^\$ ", code, flags=re.M)[1:]
    assert steps, "a console block shows `$ command` lines"
    for step in steps:
        command, _, shown = step.partition("\n")
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        printed = (proc.stdout + proc.stderr).splitlines()
        at = 0
        for line in (s.rstrip() for s in shown.splitlines() if s.strip()):
            assert line in printed[at:], f"$ {command}\nexpected: {line}\nprinted:\n" + "\n".join(printed)
            at = printed.index(line, at) + 1


def run_block(block: Block, cwd: str, env: dict) -> None:
    if block.lang == "console":
        return run_console(block.code, cwd, env)
    runner = [sys.executable, "-c"] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c"]
    proc = subprocess.run([*runner, block.code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{block} failed:\n{block.code}\n{out[-4000:]}"
    assert "Traceback" not in out, f"{block}:\n{out[-4000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in pages() if any(b.runs_here for b in page_blocks(p))])
def test_the_page_runs_as_written(page, tmp_path):
    for folder in COPIED:
        shutil.copytree(
            os.path.join(REPO, folder), tmp_path / folder, ignore=shutil.ignore_patterns(".venv", "__pycache__", "runs")
        )
    env = {
        **os.environ,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for name in ("PYTHONPATH", "RLHF_RANK_PASSWORD"):  # only what a reader has: the installed package, their folder
        env.pop(name, None)
    for block in page_blocks(page):
        if block.runs_here:
            run_block(block, str(tmp_path), env)
