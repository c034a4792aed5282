"""The health measures against hand counts, and the guardrails' one-line warnings."""

import json
import logging

import pytest

from alignment.runtime import health
from alignment.runtime.health import Guardrails, HealthConfig


def test_completion_health_counts_by_hand():
    texts = ["the food was good.", "\ufffd the view", "a b c a b c a b c", "short"]
    ended = [True, False, True, False]
    lengths = [6, 8, 9, 3]
    h = health.completion_health(texts, ended, lengths, limit=8)
    assert h["eos_rate"] == 0.5
    assert h["clipped_ratio"] == 0.25  # the second: no EOS and at the limit; the fourth stopped short of it
    assert h["mean_length"] == pytest.approx(26 / 4)
    assert h["broken_rate"] == 0.25
    assert h["repeated_ngram_rate"] == 0.25  # "a b c" three times
    bigrams = [("the", "food"), ("food", "was"), ("was", "good."), ("\ufffd", "the"), ("the", "view")]
    bigrams += [("a", "b"), ("b", "c"), ("c", "a")] * 2 + [("a", "b"), ("b", "c")]
    assert h["distinct_2"] == pytest.approx(len(set(bigrams)) / len(bigrams))


def test_empty_answers_are_counted_and_warned_beyond_noise():
    h = health.completion_health(["", " ", "soon.", "the food was good."], [True] * 4, [1, 2, 2, 6], limit=8)
    assert h["empty_rate"] == 0.5  # no word: the empty text and the lone space
    cfg, ref = HealthConfig(), {"eos_rate": 1.0, "broken_rate": 0.0, "empty_rate": 0.0}
    silent = {"eos_rate": 1.0, "broken_rate": 0.0, "empty_rate": 0.4}  # recipes_relevance's PPO against SFT
    lines = health.warnings_for(silent, ref, cfg, n=384, n_ref=384)
    assert set(lines) == {"empty_rate"} and "empty answers 0.40 of completions" in lines["empty_rate"]
    assert health.warnings_for({**silent, "empty_rate": 2 / 64}, ref, cfg, n=64, n_ref=64) == {}  # 2 in 64: noise
    assert not health.is_healthy(silent, ref, kl=7.0, kl_budget=10.0)
    assert health.is_healthy({"eos_rate": 1.0, "broken_rate": 0.0}, ref, kl=7.0, kl_budget=10.0)  # measured before


def test_repetition_and_distinct_n_edges():
    assert not health.repeats_itself("a b c a b c")  # twice is not a loop
    assert health.repeats_itself("x a b c a b c a b c y")
    assert health.distinct_n([]) == 1.0 and health.distinct_n(["one"]) == 1.0
    assert health.completion_health([], [], [], 4)["eos_rate"] == 0.0


def test_warnings_name_each_crossed_guardrail():
    cfg = HealthConfig(kl_budget=8.0)
    ref = {"eos_rate": 1.0, "broken_rate": 0.02}
    assert health.warnings_for({"eos_rate": 0.95, "broken_rate": 0.025}, ref, cfg, kl=3.0) == {}
    lines = health.warnings_for({"eos_rate": 0.55, "broken_rate": 0.08}, ref, cfg, kl=17.4)
    assert set(lines) == {"eos_rate", "broken_rate", "kl"}
    assert "EOS rate 0.55 is 0.45 below the reference's 1.00" in lines["eos_rate"]
    assert "17.40 nats is over the budget of 8" in lines["kl"]
    assert all("\n" not in line for line in lines.values())


def measures(eos: float = 1.0, broken: float = 0.0) -> dict:
    return {"completions/eos_rate": eos, "completions/broken_rate": broken, "completions/mean_length": 10.0}


def test_guardrails_warn_once_per_crossing_and_stop_on_kl(caplog):
    log = logging.getLogger("test-guardrails")
    guard = Guardrails("ppo", HealthConfig(kl_budget=5.0, stop_on_kl=True), log)
    with caplog.at_level(logging.WARNING, logger="test-guardrails"):
        assert not guard.check(measures(), 1)  # the first health measured is the reference's
        assert not guard.check({**measures(eos=0.7), "objective/kl": 2.0}, 2)
        assert not guard.check({**measures(eos=0.6), "objective/kl": 3.0}, 3)  # still tripped: no second line
        assert not guard.check({**measures(eos=0.95), "objective/kl": 3.0}, 4)  # cleared
        assert not guard.check({**measures(eos=0.5), "objective/kl": 3.0}, 5)  # tripped again: a line again
        assert guard.check({**measures(), "objective/kl": 6.0}, 6)  # over the budget: stop
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[1] for line in lines if "EOS" in line] == [" warning at step 2", " warning at step 5"]
    assert any("KL to the reference 6.00 nats is over the budget of 5" in line for line in lines)
    assert any(line.startswith("ppo: stopping at step 6") for line in lines)


def test_guardrails_watch_the_chosen_log_prob_and_resume(caplog):
    guard = Guardrails("dpo", HealthConfig(logp_drop=3.0), logging.getLogger("test-logp"))
    with caplog.at_level(logging.WARNING, logger="test-logp"):
        guard.check({"logps/chosen": -20.0}, 10)
        guard.check({"logps/chosen": -22.0}, 20)
        again = Guardrails("dpo", HealthConfig(logp_drop=3.0), logging.getLogger("test-logp"))
        again.load_state_dict(guard.state_dict())  # a resumed run keeps the start it measured against
        again.check({"logps/chosen": -24.5}, 30)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fell 4.50 nats below its start -20.00" in lines[0], lines


def test_health_table_has_a_row_per_policy():
    rows = health.table({"sft": {"eos_rate": 1.0, "kl": 0.0}, "dpo": {"eos_rate": 0.84, "label": "DPO"}})
    assert rows[0][:3] == ["policy", "EOS", "at limit"]
    assert rows[1][:2] == ["sft", "100%"] and rows[2][:2] == ["DPO", "84%"] and rows[2][-2] == "n/a"
    assert health.markdown_table(rows).splitlines()[1].startswith("| --- |")


def test_guardrails_on_a_process_that_does_not_speak_stop_alike_and_say_nothing():
    # Every process sees the same gathered measures; one warning per run, not one per process.
    cfg = HealthConfig(kl_budget=1.0, stop_on_kl=True)
    said = []

    class Capture(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())

    log = logging.getLogger("test-guardrails-quiet")
    log.addHandler(Capture())
    main, other = Guardrails("ppo", cfg, log), Guardrails("ppo", cfg, log, speaks=False)
    assert main.check({"objective/kl": 2.0}, 1) and other.check({"objective/kl": 2.0}, 1)
    assert len(said) == 2 and all("ppo:" in line for line in said)  # the warning and the stop, from `main` only


def test_a_rate_guardrail_ignores_one_unlucky_batch_and_sees_a_real_change():
    cfg = HealthConfig()
    ref = {"eos_rate": 1.0, "broken_rate": 1 / 64}
    one_more = {"eos_rate": 1.0, "broken_rate": 2 / 64}  # 0.016 over: past broken_rise, within noise at 64 vs 64
    assert health.warnings_for(one_more, ref, cfg, n=64, n_ref=64) == {}
    assert "broken_rate" in health.warnings_for(one_more, ref, cfg)  # counts unknown: the threshold alone
    degenerate = {"eos_rate": 0.84, "broken_rate": 0.09}  # the demo's old DPO against SFT, 384 samples each
    assert set(health.warnings_for(degenerate, ref, cfg, n=384, n_ref=384)) == {"eos_rate", "broken_rate"}


def test_beyond_noise_is_a_two_sample_z_test():
    # 0.10 vs 0.05 over 400 each: pooled 0.075, standard error sqrt(0.075 * 0.925 * 2 / 400) = 0.0186
    assert health.beyond_noise(0.05, 0.10, 0.05, 400, 400)  # 2.69 standard errors
    assert not health.beyond_noise(0.05, 0.10, 0.05, 100, 100)  # 1.34
    assert health.beyond_noise(0.0, 0.0, 0.0, None, 64)
    # the reference taken as known: 0.10 over 400 against 0.05 is sqrt(0.1 * 0.9 / 400) = 0.015 per standard error
    assert health.beyond_noise(0.05, 0.10, 0.05, 400, None) and not health.beyond_noise(0.02, 0.07, 0.05, 400, None)


def test_guardrails_pool_the_latest_checks_and_resume_with_them():
    cfg = HealthConfig()
    guard = Guardrails("ppo", cfg, logging.getLogger("test-guardrails-pool"))
    guard.check({"completions/eos_rate": 1.0, "completions/broken_rate": 0.0}, 0, 64)
    for step in range(1, 4):  # one broken completion in 64 per update: 0.016, within noise every time
        assert not guard.check({"completions/eos_rate": 1.0, "completions/broken_rate": 1 / 64}, step, 64)
    assert guard.tripped == set()
    for step in range(4, 9):  # eight in 64 for five updates: the pooled 256 carry it past the noise
        guard.check({"completions/eos_rate": 1.0, "completions/broken_rate": 8 / 64}, step, 64)
    assert guard.tripped == {"broken_rate"} and sum(n for n, *_ in guard.recent) == 256
    again = Guardrails("ppo", cfg, logging.getLogger("test-guardrails-pool"))
    again.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert again.state_dict() == guard.state_dict()


def test_held_out_loss_warns_at_the_end_when_the_saved_model_sits_above_the_lowest(caplog):
    log = logging.getLogger("test-held-out")
    with caplog.at_level(logging.WARNING, logger="test-held-out"):
        quiet = health.HeldOutWatch("dpo", 0.02, log)
        for step, loss in [(0, 0.693), (10, 0.77), (20, 0.60), (30, 0.66), (40, 0.59)]:  # noisy, but ends lowest
            assert quiet.check({"eval/loss": loss}, step, final=step == 40) is None
        watch = health.HeldOutWatch("reward", 0.02, log)
        for step, loss in [(0, 0.693), (10, 0.60), (20, 0.65)]:
            watch.check({"eval/loss": loss}, step)  # during training: tracked, never a warning
        assert watch.check({"eval/accuracy": 0.5}, 25, final=True) is None  # no loss: nothing to compare
        watch.check({"eval/loss": 0.615}, 30, final=True)  # within 0.02 of 0.60
        watch.check({"eval/loss": 0.65}, 40, final=True)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "reward: warning at step 40: held-out loss 0.650 is 0.050 above its lowest, 0.600 at step 10 (threshold 0.02,"
        " train.eval_loss_rise): the model fits its training rows at the held-out rows' cost; fewer epochs or more data"
    ]


def test_held_out_watch_resumes_its_lowest_and_says_where_it_started(caplog):
    log = logging.getLogger("test-held-out-resume")
    watch = health.HeldOutWatch("dpo", 0.02, log)
    watch.check({"eval/loss": 0.693}, 0)
    again = health.HeldOutWatch("dpo", 0.02, log)
    again.load_state_dict(json.loads(json.dumps(watch.state_dict())))  # the checkpoint holds it as JSON
    with caplog.at_level(logging.WARNING, logger="test-held-out-resume"):
        again.check({"eval/loss": 0.74}, 90, final=True)
    assert [r.getMessage() for r in caplog.records] == [
        "dpo: warning at step 90: held-out loss 0.740 is 0.047 above its lowest, 0.693 at the start (threshold 0.02,"
        " train.eval_loss_rise): the model fits its training rows at the held-out rows' cost; fewer epochs or more data"
    ]
    assert health.overfit_warning(0.9, 0.5, 0, rise=0) is None  # 0 turns it off
