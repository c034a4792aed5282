"""One base, four roles, on a tiny Llama saved to disk and loaded back through from_pretrained."""

import pytest
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from alignment.ppo.model import PPOModel, build_ppo_model

PAD, EOS, VOCAB = 0, 2, 64


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A saved tiny base and a reward adapter saved the way the reward stage saves it (SEQ_CLS LoRA + score)."""
    root = tmp_path_factory.mktemp("ppo_model")
    base_dir, reward_dir = str(root / "base"), str(root / "reward")
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=1, max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(base_dir)

    classifier = LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    reward = get_peft_model(
        classifier, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.SEQ_CLS)
    )
    with torch.no_grad():  # a trained-looking adapter: LoRA B is zero at init, which would hide a missing adapter
        for name, param in reward.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, 0.2)
    reward.save_pretrained(reward_dir)
    return base_dir, reward_dir


def _lora(r=4):
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type=TaskType.CAUSAL_LM)


def _build(folders, **kwargs) -> PPOModel:
    base_dir, reward_dir = folders
    return build_ppo_model(LlamaForCausalLM.from_pretrained(base_dir), _lora(), _lora(8), reward_dir, **kwargs)


def _batch():
    """Left-padded prompts followed by right-padded responses (the rollout's layout)."""
    ids = torch.tensor(
        [
            [PAD, PAD, 5, 6, 7, 8, 9, EOS, PAD],
            [3, 4, 5, 6, 10, 11, 12, 13, 14],
            [PAD, 7, 7, 7, 20, EOS, PAD, PAD, PAD],
        ]
    )
    return ids, (ids != PAD).long()


def _expected_trainable(model: PPOModel, adapters=("policy", "value")) -> set[str]:
    return {
        name
        for name, _ in model.named_parameters()
        if name.startswith("value_head.") or ("lora_" in name and any(f".{a}." in name for a in adapters))
    }


def _requiring_grad(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_exactly_policy_value_and_value_head_train_after_every_switch(folders):
    model = _build(folders)
    expected = _expected_trainable(model)
    assert expected and any(".policy." in n for n in expected) and any(".value." in n for n in expected)
    assert not any(".reward." in n for n in expected) and "value_head.weight" in expected
    assert _requiring_grad(model) == expected
    ids, mask = _batch()
    for role in ["policy", "value", "reward", "reference", "policy_and_value", "reward", "policy"]:
        model(ids, mask, role=role)
        assert _requiring_grad(model) == expected, f"after {role}"
        with model.role(role if role != "policy_and_value" else "value"):
            assert _requiring_grad(model) == expected, f"inside {role}"
    # the trap this guards against: PEFT's own switch freezes the policy and value adapters
    model.peft.set_adapter("reward")
    assert not any(".policy." in n for n in _requiring_grad(model))
    model.restore_requires_grad()
    assert _requiring_grad(model) == expected
    model.peft.set_adapter("policy")


def test_at_init_policy_equals_reference_so_kl_starts_at_zero(folders):
    model = _build(folders)
    ids, mask = _batch()
    # zero-initialised LoRA B: the policy is the SFT base bit for bit, so the step-0 KL is exactly 0
    assert torch.equal(model(ids, mask, role="policy"), model(ids, mask, role="reference"))


def test_reference_is_the_base_model_from_disk(folders):
    model = _build(folders)
    ids, mask = _batch()
    plain = LlamaForCausalLM.from_pretrained(folders[0])
    with torch.no_grad():
        base_logits = plain(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert torch.equal(model.reference_logits(ids, mask), base_logits)


def test_reward_matches_peft_sequence_classification_model(folders):
    base_dir, reward_dir = folders
    model = _build(folders)
    # right-padded rows: where a sequence-classification model scores the last non-pad token
    ids = torch.tensor([[1, 5, 6, 7, EOS, PAD, PAD], [1, 8, 9, 10, 11, 12, EOS], [1, 4, EOS, PAD, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    classifier = LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    reference = PeftModel.from_pretrained(classifier, reward_dir).eval()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits[:, 0]
    got = model(ids, mask, role="reward")
    assert got.shape == (3,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.std() > 0  # the adapter and head are really applied


def test_optimizer_step_moves_policy_and_value_only(folders):
    model = _build(folders)
    ids, mask = _batch()
    ref_before = model(ids, mask, role="reference")
    reward_before = model(ids, mask, role="reward")
    policy_before = model(ids, mask, role="policy").detach()
    values_before = model(ids, mask, role="value").detach()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # LoRA B starts at zero, so A only moves from the second step on
        logits, values = model(ids, mask, role="policy_and_value")
        loss = logits.float().logsumexp(-1).mean() + values.pow(2).mean()
        loss.backward()
        grads = {n for n, p in model.named_parameters() if p.grad is not None}
        assert grads == _expected_trainable(model)
        optimizer.step()
        optimizer.zero_grad()

    assert torch.equal(model(ids, mask, role="reference"), ref_before)
    assert torch.equal(model(ids, mask, role="reward"), reward_before)
    assert not torch.equal(model(ids, mask, role="policy"), policy_before)
    assert not torch.equal(model(ids, mask, role="value"), values_before)
    for name, param in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), name


def test_one_copy_of_the_base_in_memory(folders):
    model = _build(folders)
    base_numel = sum(p.numel() for p in LlamaForCausalLM.from_pretrained(folders[0]).parameters())
    storages = {}
    for p in model.parameters():
        storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes() // p.element_size()
    adapter_numel = {
        role: sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and f".{role}." in n)
        for role in ["policy", "value", "reward"]
    }
    heads = sum(p.numel() for p in model.value_head.parameters()) + sum(
        p.numel() for p in model.reward_head.parameters()
    )
    assert all(adapter_numel.values())
    assert sum(storages.values()) == base_numel + sum(adapter_numel.values()) + heads
    # the adapters of this tiny model are big next to its base, but a second base copy would not fit
    assert sum(storages.values()) < 2 * base_numel


def test_left_padding_gets_the_positions_of_the_unpadded_row(folders):
    model = _build(folders)
    padded = torch.tensor([[PAD, PAD, PAD, 5, 6, 7, 8]])
    plain = torch.tensor([[5, 6, 7, 8]])
    for role in ["policy", "reference"]:
        a = model(padded, (padded != PAD).long(), role=role)[:, 3:]
        b = model(plain, torch.ones_like(plain), role=role)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_saved_policy_loads_with_peft_from_pretrained(folders, tmp_path):
    model = _build(folders)
    ids, mask = _batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        model(ids, mask, role="policy").float().logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_policy(str(tmp_path / "policy"))
    loaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folders[0]), str(tmp_path / "policy"))
    with torch.no_grad():
        got = loaded(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    expected = model(ids, mask, role="policy")
    assert not torch.equal(expected, model(ids, mask, role="reference"))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_shared_policy_value_adapter(folders):
    model = _build(folders, share_policy_value=True)
    assert "value" not in model.peft.peft_config
    assert _requiring_grad(model) == _expected_trainable(model, adapters=("policy",))
    ids, mask = _batch()
    logits, values = model(ids, mask, role="policy_and_value")
    assert torch.equal(logits, model(ids, mask, role="policy"))
    assert torch.equal(values, model(ids, mask, role="value"))
    assert values.shape == ids.shape and values.dtype == torch.float32


def test_value_initialised_from_reward(folders):
    model = _build(folders, init_value_from_reward=True)
    ids, mask = _batch()
    values = model(ids, mask, role="value")
    last = (torch.arange(ids.shape[1]) * mask).argmax(-1)
    # same adapter and head as the reward: the value at the last real token is the reward score
    torch.testing.assert_close(values[torch.arange(3), last], model(ids, mask, role="reward"))
    assert _requiring_grad(model) == _expected_trainable(model)


def test_unknown_role_and_missing_reward(folders):
    model = build_ppo_model(LlamaForCausalLM.from_pretrained(folders[0]), _lora())
    ids, mask = _batch()
    with pytest.raises(ValueError, match="unknown role"):
        model(ids, mask, role="critic")
    with pytest.raises(Exception, match="no reward adapter"):
        model(ids, mask, role="reward")
    with model.role("reference"), pytest.raises(RuntimeError, match="inside the reference role"):
        model(ids, mask, role="policy")
    lora_layers = [m for n, m in model.named_modules() if n.endswith("q_proj") and hasattr(m, "disable_adapters")]
    assert lora_layers and not any(m.disable_adapters for m in lora_layers)  # adapters back on after the error
    assert model.peft.active_adapter == "policy"
    assert _requiring_grad(model) == _expected_trainable(model)


def test_generation_and_scoring_see_the_same_policy(folders):
    """Sampling and teacher-forced scoring agree on the logits, with left-padded prompts (ratio 1 at step 0)."""
    model = _build(folders)
    with torch.no_grad():  # move the policy off the base so a wrong adapter would show
        for name, param in model.named_parameters():
            if "lora_B" in name and ".policy." in name:
                param.normal_(0, 0.3)
    prompts = torch.tensor([[PAD, PAD, 5, 6], [3, 4, 5, 6]])
    prompt_mask = (prompts != PAD).long()
    out = model.generate(
        prompts, prompt_mask, max_new_tokens=5, do_sample=False, output_logits=True, return_dict_in_generate=True,
        pad_token_id=PAD, eos_token_id=None,
    )  # fmt: skip
    sampled_logits = torch.stack(out.logits, dim=1)  # [B, T, V], raw logits of each sampled step
    mask = torch.cat([prompt_mask, torch.ones_like(out.sequences[:, 4:])], dim=1)
    scored = model(out.sequences, mask, role="policy")[:, 3:-1]
    torch.testing.assert_close(scored, sampled_logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(scored, model(out.sequences, mask, role="reference")[:, 3:-1])
    assert _requiring_grad(model) == _expected_trainable(model)


def test_one_ppo_update_composes_with_the_losses(folders):
    """Rollout -> KL/rewards/GAE -> update: KL exactly 0 at step 0, first minibatch exactly on-policy."""
    from alignment.ppo import losses as L
    from alignment.runtime.generation import response_mask, truncate_after_eos
    from alignment.runtime.logprobs import logprobs_from_logits

    model = _build(folders)
    temp, P = 0.7, 4
    prompts = torch.tensor([[PAD, PAD, 5, 6], [3, 4, 5, 6], [PAD, 9, 9, 9]])
    prompt_mask = (prompts != PAD).long()
    torch.manual_seed(0)
    out = model.generate(
        prompts, prompt_mask, do_sample=True, temperature=temp, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD
    )
    responses = truncate_after_eos(out[:, P:], EOS, PAD)
    rmask = response_mask(responses, EOS)
    seq, attn = torch.cat([prompts, responses], 1), torch.cat([prompt_mask, rmask.long()], 1)

    def logprobs(logits):  # position P-1+t predicts response token t
        return logprobs_from_logits(logits[:, P - 1 : -1], responses, temp)

    with torch.no_grad():
        old_logp = logprobs(model(seq, attn, role="policy"))
        ref_logp = logprobs(model(seq, attn, role="reference"))
        old_values = model(seq, attn, role="value")[:, P - 1 : -1]
        scores = model(seq, attn, role="reward")
    kl = L.kl_k1(old_logp, ref_logp)
    assert torch.equal(kl, torch.zeros_like(kl))  # policy == reference at step 0, bit for bit
    rewards = L.compute_rewards(scores, kl, rmask, beta=0.05)
    advantages, returns = L.gae(rewards, old_values, rmask, gamma=1.0, lam=0.95)
    advantages = L.masked_whiten(advantages, rmask)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    stats = []
    for _ in range(3):
        logits, values = model(seq, attn, role="policy_and_value")
        pg_loss, clipfrac, approxkl, ratio = L.policy_loss(logprobs(logits), old_logp, advantages, rmask, 0.2)
        vf_loss, _ = L.value_loss(values[:, P - 1 : -1], old_values, returns, rmask, 0.2)
        (pg_loss + 0.1 * vf_loss).backward()
        optimizer.step()
        optimizer.zero_grad()
        stats.append((ratio.item(), approxkl.item(), clipfrac.item()))
    assert stats[0] == (1.0, 0.0, 0.0)  # the first minibatch of an update is exactly on-policy
    assert stats[2][0] != 1.0 and stats[2][1] > 0  # and later ones are not: the policy moved
    assert _requiring_grad(model) == _expected_trainable(model)


def test_adapter_settings_and_bad_reward_folder(folders, tmp_path):
    from alignment.common.errors import UserError
    from alignment.config.shared import AdapterConfig
    from alignment.ppo.model import lora_config

    cfg = lora_config(AdapterConfig(r=4, alpha=16, target_modules=["q_proj", "v_proj"]))
    model = build_ppo_model(LlamaForCausalLM.from_pretrained(folders[0]), cfg, reward_adapter=folders[1])
    assert model.peft.peft_config["value"].r == 4 and model.peft.peft_config["value"].lora_alpha == 16
    assert {n.split(".")[-4] for n in model.trainable_parameter_names() if "lora_A" in n} == {"q_proj", "v_proj"}
    with pytest.raises(UserError, match="LoRA"):
        lora_config(AdapterConfig(method="ia3"))
    with pytest.raises(UserError, match="adapter_config.json"):
        build_ppo_model(LlamaForCausalLM.from_pretrained(folders[0]), cfg, reward_adapter=str(tmp_path))


def test_gradient_checkpointing_recomputes_with_the_forward_adapter(folders):
    """Checkpointed layers are recomputed in backward; each must replay its own role's adapter.

    Equal policy/value ranks make the failure silent (wrong gradients, no shape error), so compare
    against gradients computed without checkpointing.
    """
    base_dir, reward_dir = folders
    model = build_ppo_model(LlamaForCausalLM.from_pretrained(base_dir), _lora(4), _lora(4), reward_dir)
    with torch.no_grad():  # adapters that differ, so running the wrong one changes the gradients
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    assert model.config.hidden_size == 32 and not model.is_gradient_checkpointing
    model.train()  # transformers only checkpoints in training mode
    ids, mask = _batch()

    def grads():
        logits, values = model(ids, mask, role="policy_and_value")
        (logits.float().logsumexp(-1).mean() + values.pow(2).mean()).backward()
        out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    plain = grads()
    model.gradient_checkpointing_enable()  # what trl's unwrap_model_for_generation toggles back on
    assert model.is_gradient_checkpointing
    checkpointed = grads()
    assert set(checkpointed) == set(plain) == _expected_trainable(model)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)
    assert _requiring_grad(model) == _expected_trainable(model)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


def test_reward_adapter_with_its_own_embeddings_touches_no_other_role(folders, tmp_path):
    # A reward LoRA that also trained the embeddings in full (modules_to_save=["embed_tokens"], what a
    # small base needs to learn new word meanings) keeps that copy to the reward role alone.
    base_dir, _ = folders
    reward_dir = str(tmp_path / "reward_emb")
    classifier = LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.SEQ_CLS, modules_to_save=["embed_tokens"]
    )
    reward = get_peft_model(classifier, cfg)
    with torch.no_grad():
        for name, param in reward.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, 0.2)
    reward.save_pretrained(reward_dir)

    model = build_ppo_model(LlamaForCausalLM.from_pretrained(base_dir), _lora(), _lora(8), reward_dir)
    ids = torch.tensor([[1, 5, 6, 7, EOS, PAD, PAD], [1, 8, 9, 10, 11, 12, EOS], [1, 4, EOS, PAD, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    reference = PeftModel.from_pretrained(
        LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=1), reward_dir
    )
    with torch.no_grad():
        expected = reference.eval()(input_ids=ids, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(model(ids, mask, role="reward"), expected, rtol=1e-5, atol=1e-6)

    plain = LlamaForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        base_logits = plain(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    for role in ("reference", "policy"):  # LoRA B is zero at init: both are the base, embeddings included
        torch.testing.assert_close(model(ids, mask, role=role), base_logits, rtol=0, atol=0)
    assert _requiring_grad(model) == _expected_trainable(model)


def _moved_adapters(model):
    with torch.no_grad():  # adapters that differ from the base and from each other
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    return model


def test_logprob_roles_equal_the_full_logits_of_each_role(folders):
    from alignment.runtime.logprobs import entropy_from_logits, response_logprobs

    model = _moved_adapters(_build(folders))
    model.logits_chunk_size = 5  # several chunks over the 3 x 5 response positions
    ids, mask = _batch()
    P, temp = 4, 0.7
    with torch.no_grad():
        policy, ref = model(ids, mask, role="policy"), model(ids, mask, role="reference")
        values = model(ids, mask, role="value")[:, P - 1 : -1]
        lp, ent, v = model(ids, mask, role="policy_logprobs", prompt_width=P, temperature=temp, with_entropy=True,
                           with_values=True)  # fmt: skip
        ref_lp, _ = model(ids, mask, role="reference_logprobs", prompt_width=P, temperature=temp)
    torch.testing.assert_close(lp, response_logprobs(policy, ids[:, P:], P, temp))
    torch.testing.assert_close(ent, entropy_from_logits(policy[:, P - 1 : -1], temp))
    torch.testing.assert_close(ref_lp, response_logprobs(ref, ids[:, P:], P, temp))
    assert torch.equal(v, values)
    assert not torch.allclose(lp, ref_lp)  # the roles really differ


@pytest.mark.parametrize("checkpoint_roles", [None, {"value"}, {"policy", "value"}])
def test_value_then_policy_backward_equals_the_summed_loss_exactly(folders, checkpoint_roles):
    """One pass's activations at a time: the value pass back-propagated before the policy pass runs gives the
    summed loss's gradients bit for bit (disjoint parameters), with or without per-role checkpointing."""
    model = _moved_adapters(_build(folders))
    model.train()
    ids, mask = _batch()
    P, temp = 4, 0.7
    weights = torch.linspace(-1, 1, 15).reshape(3, 5)

    def losses(with_values):
        lp, _, values = model(ids, mask, role="policy_logprobs", prompt_width=P, temperature=temp,
                              with_values=with_values)  # fmt: skip
        return (lp * weights).sum(), values

    def grads():
        out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    pg, values = losses(with_values=True)
    (pg + 0.1 * (values * weights).pow(2).sum()).backward()
    summed = grads()
    if checkpoint_roles is not None:
        model.gradient_checkpointing_enable()
        model.checkpoint_roles = checkpoint_roles
    values = model(ids, mask, role="value")[:, P - 1 : -1]
    (0.1 * (values * weights).pow(2).sum()).backward()
    pg, _ = losses(with_values=False)
    pg.backward()
    split = grads()
    assert set(split) == set(summed) == _expected_trainable(model)
    for name in summed:
        if checkpoint_roles is None:
            assert torch.equal(split[name], summed[name]), name
        else:  # recomputation replays the same kernels, but allow for reassociation
            torch.testing.assert_close(split[name], summed[name], rtol=1e-6, atol=1e-7, msg=name)


def test_a_policy_that_trains_its_own_copy_of_a_tied_lm_head(folders, tmp_path):
    # policy.modules_to_save=[lm_head] on a base whose head is tied to its embeddings (the tiny worlds' base): the
    # copy trains with the policy alone; the value and reward adapters put no LoRA inside its wrapper; the
    # reference and the reward stay the base's; the saved policy loads with its head through PeftModel.
    _, reward_dir = folders
    base_dir = str(tmp_path / "tied")
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=1, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(base_dir)
    reward_tied = str(tmp_path / "reward")
    classifier = LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    reward = get_peft_model(classifier, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                   task_type=TaskType.SEQ_CLS, modules_to_save=["embed_tokens"]))  # fmt: skip
    with torch.no_grad():
        for name, param in reward.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, 0.2)
    reward.save_pretrained(reward_tied)

    policy = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.CAUSAL_LM,
                        modules_to_save=["lm_head"])  # fmt: skip
    model = build_ppo_model(LlamaForCausalLM.from_pretrained(base_dir), policy, _lora(8), reward_tied)
    head_copy = "peft.base_model.model.lm_head.modules_to_save.policy.weight"
    assert _requiring_grad(model) == _expected_trainable(model) | {head_copy}
    assert not [n for n, _ in model.named_parameters() if ".lm_head." in n and "lora_" in n]

    ids, mask = _batch()
    before = {role: model(ids, mask, role=role) for role in ("reference", "reward")}
    start = dict(model.named_parameters())[head_copy].detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        loss = model(ids, mask, role="policy").float().logsumexp(-1).mean() + model(ids, mask, role="value").mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(dict(model.named_parameters())[head_copy], start)
    for role, expected in before.items():
        torch.testing.assert_close(model(ids, mask, role=role), expected, rtol=0, atol=0)

    model.save_policy(str(tmp_path / "policy"))
    loaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), str(tmp_path / "policy"))
    with torch.no_grad():
        got = loaded(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    torch.testing.assert_close(got, model(ids, mask, role="policy"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("existing", [None, ["down_proj"], "(.*\\.)?down_proj"])
def test_outside_keeps_a_later_adapter_out_of_the_policys_copies_and_their_insides(existing):
    import re

    from alignment.ppo.model import outside

    cfg = LoraConfig(r=4, target_modules="all-linear", exclude_modules=existing)
    assert outside(cfg, []) is cfg
    was = cfg.exclude_modules
    pattern = outside(cfg, ["lm_head"]).exclude_modules
    assert cfg.exclude_modules == was  # a copy: the caller's config is left as it was
    for name in ("lm_head", "base_model.model.lm_head", "lm_head.original_module", "lm_head.modules_to_save.policy"):
        assert re.fullmatch(pattern, name), name
    for name in ("model.layers.0.self_attn.q_proj", "model.my_lm_head_proj"):
        assert not re.fullmatch(pattern, name), name
    assert bool(re.fullmatch(pattern, "model.layers.0.mlp.down_proj")) == bool(existing)
