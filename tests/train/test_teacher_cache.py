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
    assert cache.bytes_per_token == 64 * (4 + 2) + 4 <= 1024
    assert cache.n_tokens == sum(response_positions(ex.labels) for ex in examples[:6])
    reopened = TeacherCache.open(cache.folder)
    ids, lp, tail = reopened.targets(examples[2].id)
    assert isinstance(ids, np.memmap) and ids.dtype == np.int32 and lp.dtype == np.float16
    assert (np.diff(lp.astype(np.float32), axis=1) <= 1e-3).all()  # descending probabilities
    assert np.exp(lp.astype(np.float64)).sum(1).max() <= 1.01
    total = np.exp(lp.astype(np.float64)).sum(1) + np.exp(tail.astype(np.float64))
    np.testing.assert_allclose(total, 1.0, atol=5e-3)  # top-k (float16) + tail = the whole mass


def test_top_k_matches_the_teacher_logits(cache, examples, tokenizer):
    teacher = load_model(TEACHER)
    batch = Collator(tokenizer.pad_token_id)(examples[:2])
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    t_ids, t_lp, t_tail = cache.batch([ex.id for ex in examples[:2]], labels)
    full = torch.log_softmax(logits[:, :-1].double(), -1)
    ref_lp, ref_ids = full.topk(64, dim=-1)
    mask = labels != -100
    assert torch.equal(t_ids[mask][:, :8], ref_ids[mask][:, :8])
    torch.testing.assert_close(t_lp[mask], ref_lp[mask].float(), atol=2e-2, rtol=1e-3)
    ref_tail = full.scatter(-1, ref_ids, float("-inf")).logsumexp(-1)  # exact, in float64
    torch.testing.assert_close(t_tail[mask].double(), ref_tail[mask], atol=1e-4, rtol=1e-4)
    assert (t_tail[~mask] == 0).all()


def test_a_format_1_cache_is_refused(cache):
    import json

    index = cache.folder / "index.json"
    header = json.loads(index.read_text())
    del header["format"]
    index.write_text(json.dumps(header))
    with pytest.raises(SpectrumKDError, match="format 1 .*delete the folder"):
        TeacherCache.open(cache.folder)


def test_mismatched_fingerprint_or_missing_example_is_an_error(cache, examples):
    with pytest.raises(SpectrumKDError, match="model_fingerprint"):
        cache.check({**FP, "model_fingerprint": "zzz"}, k=64, dtype="float16", example_ids=[])
    with pytest.raises(SpectrumKDError, match=str(examples[7].id)):
        cache.check(FP, k=64, dtype="float16", example_ids=[examples[7].id])
    cache.check(FP, k=64, dtype="float16", example_ids=[examples[0].id])
