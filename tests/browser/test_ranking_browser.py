"""Real browser (Playwright + Debian's Chromium): log in, rank by keyboard and by drag, submit, find it in the export;
undo, the lease countdown, imported tasks with model names and Markdown, admin user management.

`python tests/browser/test_ranking_browser.py docs/img` regenerates the screenshots in docs/img (the ranking and admin
pages at a desktop's and a phone's width).
"""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("RLHF_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        # Locally a missing browser is a skip; in CI (which installs it via setup.sh) it is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def make_server(tmp_path, tasks, **settings):
    from reward.rankings.app.process import RankServer
    from reward.rankings.store import open_store

    db = str(tmp_path / "rank.db")
    store = open_store(db)
    for prompt, texts in tasks:
        store.add_task(prompt, [{"text": t, "model": "tiny"} for t in texts])
    store.add_user("ann", password="pw-ann")
    store.add_user("root", role="admin", password="pw-root")
    store.close()
    return RankServer(store=db, log_path=str(tmp_path / "srv.log"), **settings), db


def login(page, url, name="ann", first="#cards .card", path="/rank"):
    page.goto(url + path)
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", "pw-" + name)
    page.click("button[type=submit]")
    page.wait_for_selector(first)


def order(page) -> list[int]:
    return [int(p) for p in page.eval_on_selector_all("#cards .card", "cs => cs.map(c => c.dataset.position)")]


def ranks_from(order_shown: list[int], ties_with_above: set[int] = frozenset()) -> list[int]:
    """What the page should submit: place in the list, a card tied with the one above sharing its rank."""
    ranks = [0] * len(order_shown)
    prev = 0
    for place, pos in enumerate(order_shown):
        prev = prev if place in ties_with_above else place + 1
        ranks[pos] = prev
    return ranks


def test_rank_by_keyboard_and_drag_then_find_it_in_the_export(browser, tmp_path):
    from datasets import load_from_disk
    from playwright.sync_api import expect

    from reward.rankings.config import ExportConfig
    from reward.rankings.export import export

    tasks = [
        ("Name a fruit.", ["apple", "a car", "banana, which is yellow", "no"]),
        ("Say hello.", ["hello!", "bye", "hi there"]),
    ]
    srv, db = make_server(tmp_path, tasks, annotators_per_task=1, allow_ties="true")
    with srv:
        page = browser.new_page()
        login(page, srv.url)
        first_task = int(page.get_attribute("#rank-app", "data-task-id"))
        start = order(page)

        # Keyboard only: focus the last card, press 1 to send it to the top, then j to move it down one.
        cards = page.locator("#cards .card")
        cards.nth(len(start) - 1).focus()
        page.keyboard.press("1")
        assert order(page) == [start[-1]] + start[:-1]
        page.keyboard.press("j")
        after_keys = [start[0], start[-1]] + start[1:-1]
        assert order(page) == after_keys
        page.keyboard.press("ArrowUp")
        assert order(page) == [start[-1]] + start[:-1]

        # Drag: the top card onto the third one (moving down lands after it).
        before_drag = order(page)
        cards.nth(0).drag_to(cards.nth(2))
        dragged = before_drag[1:3] + [before_drag[0]] + before_drag[3:]
        assert order(page) == dragged
        assert page.locator("#cards .card .rank").all_text_contents() == [str(i + 1) for i in range(len(start))]

        page.click("#submit")
        page.wait_for_selector("#save-status[data-state=saved]")
        assert "Saved" in page.text_content("#save-status")

        # The next task arrives without a reload (rendered by JS); rank it with keys only, with a tie, Ctrl+Enter.
        # (expect polls from Python: a string predicate would be eval'd in the page, which our CSP forbids)
        expect(page.locator("#rank-app")).not_to_have_attribute("data-task-id", str(first_task))
        second_task = int(page.get_attribute("#rank-app", "data-task-id"))
        second_start = order(page)
        page.locator("#cards .card").nth(1).focus()
        page.keyboard.press("k")
        page.keyboard.press("End")
        page.keyboard.press("t")  # tie the last card with the one above
        second_final = order(page)
        assert second_final == [second_start[0], *second_start[2:], second_start[1]]
        page.keyboard.press("Control+Enter")
        expect(page.locator("#save-status")).to_contain_text("#2")
        page.wait_for_selector("#empty:not([hidden])")
        assert page.text_content("#p-ranked").strip() == "2"
        page.close()

    out = tmp_path / "export"
    export(ExportConfig(store=db, output_dir=str(out), test_size=0))
    rows = {r["task_id"]: r for r in load_from_disk(str(out / "kwise"))["train"]}
    assert rows[first_task]["ranks"] == ranks_from(dragged) and rows[first_task]["annotator"] == "ann"
    assert rows[second_task]["ranks"] == ranks_from(second_final, ties_with_above={len(second_final) - 1})
    assert rows[first_task]["meta"]["order_shown"] == start


def test_script_and_onerror_in_model_output_show_as_text_and_run_nothing(browser, tmp_path):
    from playwright.sync_api import expect

    tasks = [("Prompt " + XSS, [XSS, "plain"]), ("Second " + XSS, ["ok", XSS])]
    srv, _ = make_server(tmp_path, tasks, annotators_per_task=1)
    with srv:
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(page, srv.url)
        seen = []
        for _ in range(2):  # first task server-rendered, second rendered by JS
            if seen:
                expect(page.locator("#rank-app")).not_to_have_attribute("data-task-id", str(seen[-1]))
            seen.append(int(page.get_attribute("#rank-app", "data-task-id")))
            assert XSS in page.text_content("#prompt")
            assert XSS in page.text_content("#cards")
            assert page.locator("#cards img, #prompt img, #cards script, #prompt script").count() == 0
            assert page.evaluate("window.pwned") is None
            page.click("#submit")
            page.wait_for_selector("#save-status[data-state=saved]")
        expect(page.locator("#empty")).to_be_visible()
        assert page.evaluate("window.pwned") is None and dialogs == [] and len(set(seen)) == 2
        page.close()


def test_skip_and_flag_from_the_page(browser, tmp_path):
    from playwright.sync_api import expect

    from reward.rankings.store import open_store

    tasks = [("First?", ["a", "b"]), ("Second?", ["c", "d"])]
    srv, db = make_server(tmp_path, tasks, annotators_per_task=1)
    with srv:
        page = browser.new_page()
        login(page, srv.url)
        skipped = int(page.get_attribute("#rank-app", "data-task-id"))
        page.click("#skip-form button")
        expect(page.locator("#rank-app")).not_to_have_attribute("data-task-id", str(skipped))
        flagged = int(page.get_attribute("#rank-app", "data-task-id"))
        page.click("details.flag summary")
        page.check("input[name=kind][value=all_bad]")
        page.fill("textarea[name=comment]", "both answers are wrong")
        page.click("#flag-form button[type=submit]")
        expect(page.locator("#empty")).to_be_visible()
        assert "Flagged" in page.text_content("#save-status")
        page.close()
    store = open_store(db)
    (flag,) = store.flags()
    assert (flag["task_id"], flag["kind"], flag["comment"]) == (flagged, "all_bad", "both answers are wrong")
    assert store.progress(1, 1)["skipped"] == 1 and store.rankings() == [] and skipped != flagged
    store.close()


def focused_position(page) -> int | None:
    """The data-position of the card that has the focus, once the page's script has put it on one (it does so after
    the task loads, which on a busy machine can come after the page's load event)."""
    script = "document.activeElement && document.activeElement.dataset.position"
    try:
        page.wait_for_function(f"({script}) !== undefined", timeout=10_000)
    except Exception:  # no card took the focus: the assertion below says so
        return None
    return int(page.evaluate(script))


def test_focus_undo_and_the_lease_countdown(browser, tmp_path):
    from playwright.sync_api import expect

    from reward.rankings.store import open_store

    tasks = [("First?", ["a1", "a2", "a3"]), ("Second?", ["b1", "b2", "b3"])]
    srv, db = make_server(tmp_path, tasks, annotators_per_task=1, lease_seconds=300, undo_seconds=60)
    with srv:
        page = browser.new_page()
        login(page, srv.url)
        # keyboard users start on the first card: no Tab needed
        start = order(page)
        assert focused_position(page) == start[0]
        left = int(page.get_attribute("#lease-left", "data-seconds"))
        assert 280 <= left <= 300 and ":" in page.text_content("#lease-left")
        page.wait_for_timeout(2100)
        ticked = int(page.get_attribute("#lease-left", "data-seconds"))
        assert ticked < left  # it counts down
        page.click("#renew")
        expect(page.locator("#save-status")).to_contain_text("renewed")
        assert int(page.get_attribute("#lease-left", "data-seconds")) > ticked
        first_task = int(page.get_attribute("#rank-app", "data-task-id"))
        page.keyboard.press("End")  # move the focused (first) card to the bottom
        submitted = order(page)
        page.keyboard.press("Control+Enter")
        expect(page.locator("#rank-app")).not_to_have_attribute("data-task-id", str(first_task))
        assert focused_position(page) == order(page)[0]  # focus on the new task's first card
        # undo: the first task comes back in the submitted order; re-rank and submit replaces it
        page.click("#undo")
        expect(page.locator("#rank-app")).to_have_attribute("data-task-id", str(first_task))
        assert order(page) == submitted and page.locator("#skip-form").is_hidden()
        page.keyboard.press("1")  # the focused first card stays first; move the last card up instead
        page.locator("#cards .card").nth(2).focus()
        page.keyboard.press("1")
        revised = order(page)
        page.click("#submit")
        expect(page.locator("#save-status")).to_contain_text("Replaced")
        page.close()
    store = open_store(db)
    (row,) = [r for r in store.rankings() if r["task_id"] == first_task]
    assert row["ranks"] == ranks_from(revised) and len(store.rankings()) == 1
    store.close()


def test_imported_tasks_show_model_names_and_markdown_safely(browser, tmp_path):
    import json

    from alignment.commands.rank import main
    from reward.rankings.app.process import RankServer
    from reward.rankings.store import open_store

    rows = [
        {
            "prompt": "Write hello world.",
            "completions": ["**Sure**:\n\n```python\nprint('hi')\n```", "<b>bold?</b> " + XSS],
            "models": ["model-a", "model-b"],
        }
    ]
    path = tmp_path / "import.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = str(tmp_path / "rank.db")
    assert main(["import", str(path), f"store={db}", "show_models=true"]) == 0
    store = open_store(db)
    store.add_user("ann", password="pw-ann")
    store.close()
    with RankServer(store=db, markdown="true", log_path=str(tmp_path / "srv.log")) as srv:
        page = browser.new_page()
        login(page, srv.url)
        assert sorted(page.locator("#cards .card .model").all_text_contents()) == ["model-a", "model-b"]
        assert page.locator("#cards .card strong").first.text_content() == "Sure"
        assert page.locator("#cards .card pre code").text_content().strip() == "print('hi')"
        # raw HTML in model text stays text, and nothing ran
        assert "<b>bold?</b>" in page.text_content("#cards")
        assert page.locator("#cards b, #cards img, #cards script").count() == 0
        assert page.evaluate("window.pwned") is None
        page.close()


def test_admin_manages_people_from_the_page(browser, tmp_path):
    from playwright.sync_api import expect

    srv, db = make_server(tmp_path, [("Q?", ["x", "y"])], annotators_per_task=1)
    with srv:
        admin = browser.new_page()
        login(admin, srv.url, "root", first="#add-user", path="/admin")
        admin.fill("#add-user input[name=name]", "dana")
        admin.fill("#add-user input[name=password]", "pw-dana")
        admin.click("#add-user button[type=submit]")
        expect(admin.locator("#admin-notice")).to_contain_text("added annotator 'dana'")
        # dana logs in and ranks
        dana = browser.new_page()
        login(dana, srv.url, "dana")
        # the admin deactivates dana: her open page can no longer save, and she cannot log in again
        admin.locator("tr[data-user=dana] form[action$='/deactivate'] button").click()
        expect(admin.locator("tr[data-user=dana] .user-status")).to_have_text("inactive")
        dana.click("#submit")
        expect(dana.locator("#save-status")).to_contain_text("Not saved")
        # reset ann's password from the page
        row = admin.locator("tr[data-user=ann]")
        row.locator("input[name=password]").fill("new-ann-pw")
        row.locator("form.reset button").click()
        expect(admin.locator("#admin-notice")).to_contain_text("password of 'ann' reset")
        admin.close()
        dana.close()


# ----------------------------------------------------------------------------------------------
# The restyled pages: buttons that look like buttons, no jump, no replacement characters, a sane per-hour figure,
# a favicon, nothing refused by the CSP; at a phone's width and a desktop's. The docs' screenshots (docs/img) come from here.

WIDTHS = {"narrow": 390, "wide": 1280}
SKY = [
    "Sunlight is scattered by the molecules in the air, and blue light is scattered much more than red because it "
    "has a shorter wavelength. So away from the sun we mostly see scattered blue light.",
    "The sky is blue because it reflects the ocean.",
    "Rayleigh scattering: its strength grows as 1/wavelength^4, so blue light is scattered about five times more "
    "than red.",
    "Because blue is the colour of the atmosphere's gas \ufffd\ufffd mostly nitrogen.",
]
SHOWCASE = [
    ("Explain in two sentences why the sky is blue.", SKY),
    (
        "Describe a caf\u00e9 you like in one sentence.",
        [
            "A small caf\ufffd with warm light and good coffee.",
            "It is a place.",
            "Cozy, quiet, and the espresso is excellent.",
        ],
    ),
]
FILLER = [(f"Name a colour, please ({i}).", [f"red {i}", f"blue {i}", f"green {i}"]) for i in range(24)]


def showcase(tmp_path):
    """A server where a scripted annotator ranked 20 tasks in a burst and bob flagged one; then the showcase tasks
    (one with invalid bytes in a completion), served first: the ranking page opens on the sky question, and the
    admin page has every table filled."""
    from reward.rankings.annotator import ScriptedAnnotator
    from reward.rankings.store import open_store

    srv, db = make_server(tmp_path, FILLER, annotators_per_task=1, seed=3)
    srv.start()
    store = open_store(db)
    store.add_user("bot1", password="pw-bot1")
    store.add_user("bob", password="pw-bob")
    bot = ScriptedAnnotator(srv.url, "bot1", "pw-bot1", lambda prompt, completion: len(completion), temperature=0)
    bot.run(max_tasks=20)
    bot.close()
    bob = store.authenticate("bob", "pw-bob")
    view = store.next_task(bob.id, 1, 600)
    store.flag(bob.id, view.task_id, "all_bad", "none of these answers the question")
    for i, (prompt, texts) in enumerate(SHOWCASE):
        store.add_task(prompt, [{"text": t, "model": "tiny"} for t in texts], priority=10 - i)
    store.close()
    return srv


def buttons_look_like_buttons(page, selector: str) -> None:
    """Every button matched has a border, padding and a pointer, and no two in one row touch."""
    # the element can exist before the stylesheet has arrived (a busy server): computed styles are read after `load`
    page.wait_for_load_state("load")
    styles = page.eval_on_selector_all(
        selector,
        "bs => bs.map(b => { const s = getComputedStyle(b); const r = b.getBoundingClientRect();"
        " return [parseFloat(s.borderTopWidth), parseFloat(s.paddingLeft), s.cursor, r.left, r.right, r.top]; })",
    )
    assert styles, selector
    for border, padding, cursor, *_ in styles:
        assert border >= 1 and padding >= 6 and cursor == "pointer", (selector, border, padding, cursor)
    by_row: dict = {}
    for *_, left, right, top in styles:
        by_row.setdefault(round(top), []).append((left, right))
    for boxes in by_row.values():
        boxes.sort()
        assert all(b[0] - a[1] >= 4 for a, b in zip(boxes, boxes[1:])), (selector, boxes)


def no_sideways_scroll(page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def watch(page) -> dict:
    """Failed requests (a missing favicon, any 404) and console errors (a CSP refusal) while the page is open."""
    seen: dict = {"bad": [], "errors": []}
    page.on("response", lambda r: seen["bad"].append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    return seen


@pytest.mark.parametrize("width", ["narrow", "wide"])
def test_the_restyled_pages(browser, tmp_path, width):
    from playwright.sync_api import expect

    w = WIDTHS[width]
    srv = showcase(tmp_path)
    try:
        page = browser.new_page(viewport={"width": w, "height": 900})
        seen = watch(page)
        login(page, srv.url)
        assert page.get_attribute("link[rel=icon]", "href") == "/static/favicon.svg"
        buttons_look_like_buttons(page, "#renew, #submit, #skip-form button")
        # invalid bytes in a completion are marked, never shown as U+FFFD (server-rendered here)
        assert "\ufffd" not in page.text_content("#rank-app") and page.locator("#cards .bad-bytes").count() >= 1
        top = page.evaluate("document.querySelector('#prompt').getBoundingClientRect().top")
        first = page.get_attribute("#rank-app", "data-task-id")
        page.click("#submit")
        expect(page.locator("#rank-app")).not_to_have_attribute("data-task-id", first)
        page.wait_for_selector("#undo:not([hidden])")
        # the save status and Undo appear in a row kept for them: nothing below moves
        assert page.evaluate("document.querySelector('#prompt').getBoundingClientRect().top") == top
        buttons_look_like_buttons(page, "#undo, #renew")
        assert "\ufffd" not in page.text_content("#rank-app") and page.locator("#cards .bad-bytes").count() >= 1
        no_sideways_scroll(page, w)
        page.goto(srv.url + "/favicon.ico")
        assert not seen["bad"] and not seen["errors"], seen
        page.close()

        admin = browser.new_page(viewport={"width": w, "height": 900})
        seen = watch(admin)
        login(admin, srv.url, "root", first="#add-user", path="/admin")
        buttons_look_like_buttons(admin, "#flags button")
        buttons_look_like_buttons(admin, "tr[data-user=ann] button")
        buttons_look_like_buttons(admin, "tr[data-user=bot1] button")
        # 20 scripted rankings in a second or two: counted over the 15-minute floor, not extrapolated to 70,000/h
        per_hour = admin.locator("#annotators tr", has_text="bot1").locator(".per-hour").text_content()
        assert float(per_hour.replace(",", "")) == pytest.approx(20 * 4, abs=1)
        no_sideways_scroll(admin, w)
        assert not seen["bad"] and not seen["errors"], seen
        admin.close()
    finally:
        srv.stop()


def take_screenshots(folder: str) -> None:
    """docs/img/{ranking,admin}_page{,_narrow}.png: the showcase at a desktop's and a phone's width."""
    import tempfile
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        srv = showcase(Path(tmp))
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for width, w in WIDTHS.items():
                suffix = "" if width == "wide" else "_narrow"
                page = b.new_page(viewport={"width": w, "height": 900}, device_scale_factor=1)
                login(page, srv.url)
                # Rank the way a careful annotator would, with the keyboard, and leave the focus ring visible.
                for place, start in enumerate(["Sunlight", "Rayleigh", "Because blue", "The sky is blue"]):
                    page.locator("#cards .card", has_text=start).focus()
                    page.keyboard.press(str(place + 1))
                page.locator("#cards .card", has_text="Rayleigh").focus()
                page.screenshot(path=os.path.join(folder, f"ranking_page{suffix}.png"), full_page=True)
                page.close()
                admin = b.new_page(viewport={"width": w, "height": 900}, device_scale_factor=1)
                login(admin, srv.url, "root", first="#add-user", path="/admin")
                admin.screenshot(path=os.path.join(folder, f"admin_page{suffix}.png"), full_page=True)
                admin.close()
        finally:
            b.close()
            srv.stop()


if __name__ == "__main__":
    take_screenshots(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
