"""Batched generation with a tiny random model: seeds, batching, budgets, EOS, RNG hygiene."""

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate.generation import (
    GREEDY,
    INSTRUCT,
    DecodingSettings,
    encode_prompts,
    generate,
    iter_generate,
    iter_samples,
)
from spectrumkd.models import tiny_random_model, tiny_tokenizer

PROMPTS = [
    "Below is an instruction that describes a task.",
    "Write a response.",
    "### Instruction:\nName three colours.\n\n### Response:\n",
    "Who",
    "The first of the many questions was about the weather in the city.",
]
GREEDY_KW = dict(do_sample=False, max_new_tokens=12, max_length=None, max_prompt_length=None,
                 no_repeat_ngram_size=0)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_random_model("llama", layers=2, hidden=64, seed=3)


def test_protocol_defaults():
    assert (INSTRUCT.do_sample, INSTRUCT.temperature, INSTRUCT.top_k, INSTRUCT.top_p) == (
        True, 1.0, 0, 1.0)
    assert (INSTRUCT.no_repeat_ngram_size, INSTRUCT.max_length, INSTRUCT.max_prompt_length) == (
        6, 512, 256)
    assert (GREEDY.do_sample, GREEDY.max_new_tokens) == (False, 1024)
    with pytest.raises(SpectrumKDError):
        DecodingSettings(do_sample=False)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng(model, tok):
    state = torch.random.get_rng_state()
    kw = dict(max_length=48, max_prompt_length=32, batch_size=2)
    a = generate(model, tok, PROMPTS, seed=10, **kw)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == generate(model, tok, PROMPTS, seed=10, **kw)
    assert a != generate(model, tok, PROMPTS, seed=20, **kw)
    assert all(isinstance(t, str) and t == t.strip() for t in a)


def test_batched_greedy_equals_one_at_a_time(model, tok):
    batched = generate(model, tok, PROMPTS, batch_size=5, **GREEDY_KW)
    single = [generate(model, tok, [p], batch_size=1, **GREEDY_KW)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1  # not a degenerate constant output


def test_budgets_follow_max_length(model, tok):
    ids, n_cut = encode_prompts(tok, PROMPTS, max_prompt_length=8)
    assert n_cut == sum(len(tok(p, add_special_tokens=False)["input_ids"]) > 8 for p in PROMPTS)
    assert all(len(x) <= 8 for x in ids)
    settings = DecodingSettings(do_sample=False, max_length=14, max_prompt_length=8)
    texts = [t for _, batch in iter_generate(model, tok, PROMPTS, settings=settings, seed=0,
                                             batch_size=5) for t in batch]
    for prompt_ids, text in zip(ids, texts):
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 14 - len(prompt_ids) + 1


def test_stops_at_eos(tok):
    eos = tok.eos_token_id  # a model whose only likely next token is EOS
    biased = tiny_random_model("llama", layers=1, hidden=32, seed=0)
    with torch.no_grad():
        biased.get_output_embeddings().weight.zero_()
        biased.get_output_embeddings().weight[eos] = 1.0
        biased.model.norm.weight.fill_(1.0)
    out = generate(biased, tok, ["Who", "Write"], batch_size=2, **GREEDY_KW)
    assert out == ["", ""]
    settings = DecodingSettings(**GREEDY_KW)
    [(_, samples)] = iter_samples(biased, tok, ["Who", "Write"], settings=settings, seed=0)
    assert [s.tokens for s in samples] == [(eos,), (eos,)]  # the EOS that ended each answer


def test_samples_carry_the_tokens_of_their_texts(model, tok):
    settings = DecodingSettings(**GREEDY_KW)
    [(_, samples)] = iter_samples(model, tok, PROMPTS[:2], settings=settings, seed=0)
    assert [s.text for s in samples] == generate(model, tok, PROMPTS[:2], **GREEDY_KW)
    for s in samples:
        assert 0 < len(s.tokens) <= 12
        assert tok.decode(list(s.tokens), skip_special_tokens=True).strip() == s.text


def test_resume_matches_uninterrupted(model, tok):
    settings = INSTRUCT.with_(max_length=40, max_prompt_length=24)
    full = list(iter_generate(model, tok, PROMPTS, settings=settings, seed=10, batch_size=2))
    resumed = list(iter_generate(model, tok, PROMPTS, settings=settings, seed=10, batch_size=2,
                                 start=2))
    assert resumed == full[1:]


def test_stop_strings_cut(model, tok):
    text = generate(model, tok, ["Who"], stop_strings=["e"], **GREEDY_KW)[0]
    assert "e" not in text
