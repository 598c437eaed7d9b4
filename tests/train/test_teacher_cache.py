"""Teacher cache: compact, memory-mapped, aligned with the labels, fingerprinted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEACHER
from spectrumkd import SpectrumKDError
from spectrumkd.data import Collator
from spectrumkd.models import load_model
from spectrumkd.train.teacher_cache import TeacherCache, response_positions, write_teacher_cache

FP = {"model": "t", "model_fingerprint": "abc", "dataset_fingerprint": "d", "template": "dolly",
      "max_length": 128}


@pytest.fixture
def cache(examples, tokenizer, tmp_path):
    return write_teacher_cache(tmp_path / "tc", load_model(TEACHER), examples[:6],
                               Collator(tokenizer.pad_token_id), vocab_size=len(tokenizer), k=64,
                               batch_size=4, fingerprint=FP)


def test_format_is_compact_and_memory_mapped(cache, examples):
    assert cache.bytes_per_token == 64 * (4 + 2) <= 1024
    assert cache.n_tokens == sum(response_positions(ex.labels) for ex in examples[:6])
    reopened = TeacherCache.open(cache.folder)
    ids, lp = reopened.targets(examples[2].id)
    assert isinstance(ids, np.memmap) and ids.dtype == np.int32 and lp.dtype == np.float16
    assert (np.diff(lp.astype(np.float32), axis=1) <= 1e-3).all()  # descending probabilities
    assert np.exp(lp.astype(np.float64)).sum(1).max() <= 1.01


def test_top_k_matches_the_teacher_logits(cache, examples, tokenizer):
    teacher = load_model(TEACHER)
    batch = Collator(tokenizer.pad_token_id)(examples[:2])
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    t_ids, t_lp = cache.batch([ex.id for ex in examples[:2]], labels)
    ref_lp, ref_ids = torch.log_softmax(logits[:, :-1], -1).topk(64, dim=-1)
    mask = labels != -100
    assert torch.equal(t_ids[mask][:, :8], ref_ids[mask][:, :8])
    torch.testing.assert_close(t_lp[mask], ref_lp[mask], atol=2e-2, rtol=1e-3)


def test_mismatched_fingerprint_or_missing_example_is_an_error(cache, examples):
    with pytest.raises(SpectrumKDError, match="model_fingerprint"):
        cache.check({**FP, "model_fingerprint": "zzz"}, k=64, dtype="float16", example_ids=[])
    with pytest.raises(SpectrumKDError, match=str(examples[7].id)):
        cache.check(FP, k=64, dtype="float16", example_ids=[examples[7].id])
    cache.check(FP, k=64, dtype="float16", example_ids=[examples[0].id])
