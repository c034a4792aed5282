"""The app under test: a store with ann and bob (annotators) and root (admin), N = 2."""

from __future__ import annotations

import pytest

from reward.rankings.app.server import create_app
from reward.rankings.config import RankConfig


@pytest.fixture
def app(store, tmp_path):
    store.add_user("ann", password="pw-ann")
    store.add_user("bob", password="pw-bob")
    store.add_user("root", role="admin", password="pw-root")
    cfg = RankConfig(store=store.url, output_dir=str(tmp_path / "run"), annotators_per_task=2, lease_seconds=60)
    return create_app(cfg, store=store)
