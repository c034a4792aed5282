"""The exact instances must be reachable: every response distribution the optimum asks for is one a causal LM can
express, so a method's shortfall is the method's, not the instance's."""

import torch

from tests.oracles.instances import SHAPES, instance


def last_logits(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0, -1]


def test_a_context_of_one_repeated_token_is_invisible_to_a_causal_lm_without_a_distinct_first_token(tmp_path):
    # Why every instance prompt starts with EOS: attention over identical tokens returns the same vector whatever
    # the positions, so without it P(next | "b") = P(next | "b b") and "b </s>" after the prompt "b" can hold at most
    # P(b)(1 - P(b)) <= 1/4 of the mass, however far the optimum puts it.
    from transformers import AutoModelForCausalLM

    inst = instance("sparse")
    base, tokenizer = inst.build(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    b = tokenizer.convert_tokens_to_ids("b")
    with torch.no_grad():
        assert torch.allclose(last_logits(model, [b]), last_logits(model, [b, b]), atol=1e-5)
        with_bos = tokenizer("b")["input_ids"], tokenizer("b")["input_ids"] + [b]
        assert with_bos[0] == [tokenizer.eos_token_id, b]
        assert (last_logits(model, with_bos[0]) - last_logits(model, with_bos[1])).abs().max() > 1e-3


def test_every_instance_prompt_starts_with_eos_and_keeps_a_vocabulary_of_5_to_9():
    for shape in SHAPES:
        inst = instance(shape, seed=1)
        tokenizer = inst.tokenizer()
        assert 5 <= len(tokenizer) <= 9
        for ids in inst.prompt_ids(tokenizer):
            assert ids[0].item() == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[1:].tolist()
