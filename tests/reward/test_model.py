"""Where the reward model's base comes from: an SFT run folder's merged model, a plain folder, a builtin."""

import json

import pytest

from alignment.common.errors import UserError
from reward import model as M


def test_normalize_with_reward_stats(tmp_path):
    import torch

    (tmp_path / M.STATS_FILE).write_text(json.dumps({"mean": 2.0, "std": 4.0, "count": 3}))
    stats = M.read_stats(str(tmp_path))
    assert M.normalize(torch.tensor([2.0, 6.0, -2.0]), stats).tolist() == [0.0, 1.0, -1.0]
    with pytest.raises(UserError, match="no reward_stats.json"):
        M.read_stats(str(tmp_path / "missing"))
