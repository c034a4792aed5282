"""The admin side of gold tasks and campaigns: add a gold task from the page (CSRF-checked), see gold accuracy,
reliability, weight and the pause per annotator, resume a paused one, open a campaign's report page."""

from __future__ import annotations

import re

import pytest

from reward.rankings.app.server import create_app
from reward.rankings.config import RankConfig
from reward.rankings.simulate import SimAnnotator, rank_in_store
from tests.reward.rankings.app.test_app import api_login, browser_login
from tests.reward.rankings.conftest import add_tasks
from tests.reward.rankings.store.test_quality import by_text_number, campaign_tasks, gold_tasks

pytestmark = pytest.mark.slow  # a whole store, a server app and the reliability fit: seconds


def test_admin_adds_gold_sees_quality_pauses_and_resumes(store, tmp_path):
    store.add_user("root", role="admin", password="pw-root")
    cfg = RankConfig(store=store.url, output_dir=str(tmp_path), gold_rate=0.4, gold_pause_below=0.7, gold_min_answers=3)
    app = create_app(cfg, store=store)
    admin, csrf = browser_login(app, "root", "pw-root")
    form = {"prompt": "Best?", "completions": "answer 0 here\n---\nanswer 1 here\n---\nanswer 2 here", "ranks": "1 2 3"}
    assert admin.post("/admin/gold", data=form).status_code == 403  # no CSRF token
    page = admin.post("/admin/gold", data={**form, "csrf_token": csrf})
    assert page.status_code == 200 and "gold task" in page.text and store.overview(1)["gold_tasks"] == 1
    bad = admin.post("/admin/gold", data={**form, "ranks": "1 1 1", "csrf_token": csrf})
    assert bad.status_code == 400 and "ties every completion" in bad.text
    store.add_gold_tasks(gold_tasks(9, k=4))  # (with 10 such gold tasks the careless one was paused in 20 of 20 seeds)
    add_tasks(store, 40, k=4, prefix="answer")
    store.create_campaign("final", campaign_tasks(4), annotators_per_task=2, meta={"policies": ["a", "b", "c"]})
    people = [SimAnnotator("careful", 0.2), SimAnnotator("steady", 0.2), SimAnnotator("careless", careless=True)]
    rank_in_store(store, people, by_text_number, seed=2)

    html = admin.get("/admin").text
    row = re.search(r'<tr data-annotator="careless">(.*?)</tr>', html, re.S).group(1)
    assert "paused" in row and "resume" in row
    api, auth = api_login(app, "root", "pw-root")
    quality = api.get("/api/admin/quality", headers=auth).json()
    people_q = quality["annotators"]
    assert people_q["careless"]["paused"] and people_q["careless"]["gold_accuracy"] < 0.7
    assert min(people_q, key=lambda n: people_q[n]["weight"]) == "careless"
    assert quality["campaigns"][0]["name"] == "final"
    done = admin.post("/admin/annotators/careless/resume", data={"csrf_token": csrf})
    assert done.status_code == 200 and not store.gold_report()["careless"]["paused"]

    report = admin.get("/admin/campaigns/final")
    assert report.status_code == 200 and 'data-policy="a"' in report.text and "Position check" in report.text
    assert admin.get("/admin/campaigns/nope").status_code == 404
    assert api.get("/api/admin/campaigns/final", headers=auth).json()["policies"] == ["a", "b", "c"]
    assert api.get("/api/admin/campaigns/nope", headers=auth).status_code == 404


def test_every_table_of_every_page_sits_in_a_frame_that_keeps_a_phone_from_scrolling_sideways():
    # A bare <table> wider than a phone widens the whole page (the browser test caught the quality table at 609 px
    # on a 390 px screen); a list stacks into cards (class "stack"), a matrix scrolls inside its frame.
    import re
    from pathlib import Path

    folder = Path(__file__).resolve().parents[4] / "reward" / "rankings" / "app" / "templates"
    for page in folder.glob("*.html"):
        text = page.read_text()
        for table in re.finditer(r"<table[^>]*>", text):
            before = text[: table.start()].rstrip()
            assert before.endswith('<div class="table-wrap">') or before.endswith('<div class="table-wrap scroll">'), (
                f"{page.name}: {table.group(0)} is not the first thing in a table-wrap frame"
            )
            assert 'class="stack"' in table.group(0) or before.endswith('scroll">'), f"{page.name}: {table.group(0)}"
