"""Each example's score equals an independent one-example-at-a-time computation."""

import pytest
import torch
import torch.nn.functional as F

from spectrumkd import SpectrumKDError
from spectrumkd.models import tiny_random_model
from spectrumkd.scoring import make_batches, padded_tokens, score_examples


def reference_scores(model, examples, metric, reduction):
    out = []
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            logits = model(ids).logits[0, :-1].double()  # [T-1, V]
            labels = torch.tensor(ex.labels[1:])
            keep = labels != -100
            logp = torch.log_softmax(logits[keep], -1)
            if metric == "ce":
                tok = F.nll_loss(logp, labels[keep], reduction="none")
            elif metric == "entropy":
                tok = -(logp.exp() * logp).sum(-1)
            else:
                tok = torch.ones(int(keep.sum()), dtype=torch.float64)
            out.append(float(tok.mean() if reduction == "mean" else tok.sum()))
    return out


@pytest.mark.parametrize(
    "arch,metric,reduction",
    [("llama", "ce", "mean"), ("gpt2", "ce", "mean"), ("llama", "ce", "sum"),
     ("gpt2", "entropy", "mean"), ("llama", "length", "sum")],
)
def test_batched_equals_one_at_a_time(arch, metric, reduction, examples):
    model = tiny_random_model(arch, layers=2, hidden=32)
    got = score_examples(model, examples, metric=metric, reduction=reduction, batch_tokens=512, progress=False)
    want = reference_scores(model, examples, metric, reduction)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_bucketing_does_not_change_scores(examples):
    model = tiny_random_model("llama")
    lengths = [len(e) for e in examples]
    assert make_batches(lengths, 300) != make_batches(lengths, 300, bucket=False)
    bucketed = score_examples(model, examples, batch_tokens=300, progress=False)
    naive = score_examples(model, examples, batch_tokens=300, bucket=False, progress=False)
    single = score_examples(model, examples, batch_tokens=1, progress=False)
    assert bucketed == pytest.approx(naive, abs=1e-5) and bucketed == pytest.approx(single, abs=1e-5)


def test_bucketing_pads_less():
    lengths = [10, 200, 12, 190, 11, 205, 9, 198]
    naive = make_batches(lengths, 420, bucket=False)
    bucketed = make_batches(lengths, 420)
    assert sorted(i for b in bucketed for i in b) == list(range(8))
    assert all(len(b) * max(lengths[i] for i in b) <= 420 for b in bucketed)
    assert padded_tokens(lengths, bucketed) < padded_tokens(lengths, naive)


def test_nan_scores_name_the_ids(examples):
    model = tiny_random_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[examples[3].input_ids[0]] = float("nan")
    bad = {e.id for e in examples if e.input_ids[0] == examples[3].input_ids[0]}
    with pytest.raises(SpectrumKDError, match="non-finite ce scores") as err:
        score_examples(model, examples, batch_tokens=1, progress=False)
    assert any(repr(i) in str(err.value) for i in bad)


def test_unknown_metric_and_rougel_needs_tokenizer(examples):
    model = tiny_random_model("llama", layers=1, hidden=32)
    with pytest.raises(SpectrumKDError, match="unknown metric"):
        score_examples(model, examples, metric="bleu", progress=False)
    with pytest.raises(SpectrumKDError, match="needs the tokenizer"):
        score_examples(model, examples[:2], metric="rougel", progress=False)


def test_rougel_metric_is_one_minus_f(examples, tok):
    model = tiny_random_model("llama", layers=1, hidden=32)
    scores = score_examples(model, examples[:4], metric="rougel", tokenizer=tok, max_new_tokens=4,
                            progress=False)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
