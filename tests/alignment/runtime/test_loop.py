"""The shared loop mechanics on one process: the step triggers, one optimizer step with accumulation and
clipping (against plain torch), metric windows and the last metrics of a run."""

import json

import pytest
import torch

from alignment.runtime import loop


def test_due_every_n_steps_and_at_the_end_only_when_final():
    assert [d for d in range(1, 11) if loop.due(d, 3, 10)] == [3, 6, 9]
    assert [d for d in range(1, 11) if loop.due(d, 3, 10, final=True)] == [3, 6, 9, 10]
    assert [d for d in range(1, 11) if loop.due(d, 5, 10)] == [5]  # the last step is the stage's own
    assert [d for d in range(1, 5) if loop.due(d, 0, 4, final=True)] == [4]  # 0: never, except the final log


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True, gradient_accumulation_steps=2)


def _setup(accelerator, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (4 - s) / 4)  # linear decay over 4 steps
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler


def _steps(accelerator, model, optimizer, scheduler, max_grad_norm, batches):
    norms = []
    for x in batches:
        with accelerator.accumulate(model):
            loss = model(x).square().mean() / 2 * 50  # large gradients: clipping at 1 bites
            norms.append(loop.optimizer_step(accelerator, model, optimizer, scheduler, loss, max_grad_norm))
    return norms


@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])
def test_optimizer_step_accumulates_clips_and_schedules_like_plain_torch(accelerator, max_grad_norm):
    batches = list(torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(1)))
    model, optimizer, scheduler = _setup(accelerator)
    norms = _steps(accelerator, model, optimizer, scheduler, max_grad_norm, batches)

    torch.manual_seed(0)
    ref = torch.nn.Linear(4, 3)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    want_norms = []
    for step in range(2):  # two micro-batches per optimizer step; the loss of each is divided by 2
        for x in batches[2 * step : 2 * step + 2]:
            (ref(x).square().mean() / 2 * 50 / 2).backward()
        params = list(ref.parameters())
        want_norms.append(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")).item())
        ref_opt.step()
        ref_opt.zero_grad()
        for group in ref_opt.param_groups:  # the linear schedule over 4 steps, stepped once per optimizer step
            group["lr"] = 0.1 * (4 - step - 1) / 4

    assert norms[0] is None and norms[2] is None  # no step on the first micro-batch of an accumulation
    assert norms[1] == pytest.approx(want_norms[0]) and norms[3] == pytest.approx(want_norms[1])
    assert want_norms[0] > 1  # so max_grad_norm=1 really clipped, and 0 really did not
    for got, want in zip(accelerator.unwrap_model(model).parameters(), ref.parameters()):
        torch.testing.assert_close(got, want)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1 * 2 / 4)


def test_clipping_changes_the_update_and_zero_disables_it(accelerator):
    batches = list(torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(2)))
    finals = {}
    for max_grad_norm in (0.0, 1e9, 0.5):
        model, optimizer, scheduler = _setup(accelerator)
        _steps(accelerator, model, optimizer, scheduler, max_grad_norm, batches)
        finals[max_grad_norm] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(finals[0.0], finals[1e9])
    assert not torch.allclose(finals[0.0], finals[0.5])


def test_window_sums_and_reduces(accelerator):
    window = loop.Window()
    window.add(loss=0.5, tokens=10)
    window.add(loss=0.25, tokens=torch.tensor(6))
    window.steps += 1
    assert window.totals(accelerator) == {"loss": 0.75, "tokens": 16.0} and window.seconds > 0
    window.reset()
    assert window.sums == {} and window.steps == 0
    assert loop.reduce_metrics(accelerator, {"a": 1.5, "b": 2}) == {"a": 1.5, "b": 2.0}


def test_train_metrics_and_last_metrics(tmp_path):
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5),
                                                  lambda s: 1.0)  # fmt: skip
    assert loop.train_metrics(1.5, scheduler, 0.25, None) == {
        "train/loss": 1.5, "train/learning_rate": 0.5, "train/epoch": 0.25,
    }  # fmt: skip
    assert loop.train_metrics(1.5, scheduler, 0.25, 3.0)["train/grad_norm"] == 3.0
    rows = [{"step": 1, "train/loss": 2.0, "reward/accuracy": 0.5}, {"step": 2, "train/loss": 1.0},
            {"step": 2, "eval/loss": 3.0}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert loop.last_metrics(str(tmp_path), ("train/",)) == {"train/loss": 1.0}
    assert loop.last_metrics(str(tmp_path)) == {"train/loss": 1.0, "reward/accuracy": 0.5, "eval/loss": 3.0}


def test_peak_memory_on_cpu_is_the_process_peak_rss_in_gb():
    import resource

    from alignment.runtime import loop

    peak = loop.peak_memory_gb("cpu")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    assert 0.01 < peak < 1024 and abs(peak - rss) < 0.01
    assert loop.peak_memory_gb(None) >= peak  # a high-water mark: never falls
