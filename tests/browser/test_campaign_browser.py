"""A blind campaign task in a real browser: ranked by keyboard alone, no policy name anywhere in the page, and the
ranking lands on the policies it was meant for (the campaign report reads it back)."""

from __future__ import annotations

import pytest

from tests.browser.test_ranking_browser import browser, login, order  # noqa: F401  (browser: the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
POLICIES = ["policy-sft", "policy-bon4", "policy-ppo"]


def test_rank_a_blind_campaign_task_by_keyboard(browser, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    from reward.rankings.app.process import RankServer
    from reward.rankings.campaign import campaign_report
    from reward.rankings.store import open_store

    db = str(tmp_path / "rank.db")
    store = open_store(db)
    texts = ["A calm, kind review.", "Terrible, awful, broken.", "Fine enough, I suppose."]
    task = {
        "prompt": "Review of the cafe:",
        "completions": [{"text": t, "model": p} for t, p in zip(texts, POLICIES)],
        "meta": {"policies": POLICIES, "show_models": True},
    }
    store.create_campaign("blind", [task], annotators_per_task=1, meta={"policies": POLICIES})
    store.add_user("ann", password="pw-ann")
    store.close()
    with RankServer(store=db, log_path=str(tmp_path / "srv.log")) as srv:
        page = browser.new_page()
        login(page, srv.url)
        html = page.content()
        assert not any(p in html for p in POLICIES) and page.locator("#cards .card .model").count() == 0
        start = order(page)
        # Keyboard only: the last card to the top with "1", then Ctrl+Enter submits.
        page.locator("#cards .card").nth(len(start) - 1).focus()
        page.keyboard.press("1")
        final = order(page)
        assert final == [start[-1]] + start[:-1]
        page.keyboard.press("Control+Enter")
        expect(page.locator("#save-status")).to_have_attribute("data-state", "saved")
        page.wait_for_selector("#empty:not([hidden])")
        page.close()
    store = open_store(db)
    _, (row,) = store.campaign_rankings("blind")
    assert row["annotator"] == "ann" and row["order_shown"] == start
    best = row["policies"][row["ranks"].index(1)]
    assert best == row["policies"][start[-1]]  # the card put first is the policy that won
    report = campaign_report(store, "blind", samples=50, unit="task")
    assert report["win_rates"][best][next(p for p in POLICIES if p != best)]["rate"] == 1.0
    store.close()
