"""Markdown for the pages: model completions (optional) and the guidelines, both through a maintained sanitiser.

Model text: CommonMark with raw HTML turned off (markdown-it-py escapes any `<tag>` in the text, so it
shows as text), then nh3 (the Ammonia sanitiser) with a short allowlist of formatting tags: no links,
images, attributes (but a code block's `language-x` class) or anything that could run or fetch.
Guidelines (written by the project's admin): Markdown with its usual extensions, then nh3 with its
default allowlist. The browser renders the result only through an allowlist of elements too (rank.js).
"""

from __future__ import annotations

import functools
import re

import nh3
from markupsafe import Markup, escape

from reward.rankings.store import TaskView

MODEL_TAGS = {
    "p",
    "br",
    "strong",
    "em",
    "code",
    "pre",
    "ul",
    "ol",
    "li",
    "blockquote",
    "hr",
    "del",
    "s",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}


@functools.lru_cache(maxsize=1)
def _model_markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


@functools.lru_cache(maxsize=4096)
def model_html(text: str) -> str:
    """Sanitised HTML for a completion rendered as Markdown (cached: the same texts are shown many times)."""
    html = _model_markdown().render(text)
    return nh3.clean(
        html,
        tags=MODEL_TAGS,
        attributes={"code": {"class"}},
        attribute_filter=_code_class,
        link_rel=None,
        strip_comments=True,
    )


def _code_class(tag: str, attr: str, value: str) -> str | None:
    if tag == "code" and attr == "class" and value.startswith("language-") and value[9:].replace("-", "").isalnum():
        return value
    return None


def guidelines_html(text: str) -> str:
    import markdown

    return nh3.clean(markdown.markdown(text, extensions=["extra", "sane_lists"]), link_rel="noopener noreferrer")


def view_json(view: TaskView, markdown: bool) -> dict:
    """A leased task for the API; with `markdown`, each completion also carries its sanitised `html`."""
    data = view.as_json()
    if markdown:
        data["completions"] = [{**c, "html": model_html(c["text"])} for c in data["completions"]]
    return data


REPLACEMENT = "\ufffd"
BAD_BYTES = Markup('<span class="bad-bytes" title="bytes of the model\'s output that are not valid text">?</span>')
"""What a U+FFFD in model text is shown as: marked, so no one reads a replacement character as the model's text."""


def marked(text) -> Markup:
    """Jinja filter: `text` escaped (or, if already Markup, the sanitised HTML as is) with every run of U+FFFD shown
    as one marked `?` (rank.js marks the pages it renders itself the same way)."""
    html = text if isinstance(text, Markup) else escape(text)
    return Markup(re.sub(REPLACEMENT + "+", str(BAD_BYTES), str(html)))
