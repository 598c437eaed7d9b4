"""Layer importance (angular distance, Block Influence) against hand-made models and numbers."""

import math

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.models import prune_layers, tiny_random_model, tiny_tokenizer
from spectrumkd.models.importance import angular_distances, block_influence, choose_layers


def _batches():
    tok = tiny_tokenizer()
    texts = ["Write a response that completes the request.", "The capital of France is Paris."]
    enc = tok(texts, padding=True, return_tensors="pt")
    return [{"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}]


def _silence(model, layers):
    """Make decoder layers exact identities (zero output projections → residual passes through)."""
    with torch.no_grad():
        for i in layers:
            layer = model.model.layers[i]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def test_angular_distance_finds_the_identity_block():
    model = tiny_random_model(layers=6, hidden=32)
    _silence(model, [2, 3])
    d = angular_distances(model, _batches(), 2)
    assert len(d) == 5
    assert d[2] == pytest.approx(0.0, abs=1e-6)  # layers 2, 3 change nothing
    assert min(d[i] for i in (0, 1, 3, 4)) > 1e-3
    choice = choose_layers(model, _batches(), keep=4)
    assert choice.removed == [2, 3] and choice.kept == [0, 1, 4, 5]


def test_block_influence_ranks_identity_layers_last():
    model = tiny_random_model(layers=5, hidden=32)
    _silence(model, [1, 4])
    bi = block_influence(model, _batches())
    assert bi[1] == pytest.approx(0.0, abs=1e-6) and bi[4] == pytest.approx(0.0, abs=1e-6)
    assert choose_layers(model, _batches(), keep=3, method="bi").removed == [1, 4]


def test_angular_distance_value_is_arccos_over_pi():
    """The distance of layer 0 is arccos of the token-averaged cosine of its input and output, / π."""
    model = tiny_random_model(layers=2, hidden=32)
    grabbed = {}
    h = model.model.layers[0].register_forward_hook(
        lambda m, a, kw, o: grabbed.update(x=(a[0] if a else kw["hidden_states"]),
                                            y=o[0] if isinstance(o, tuple) else o),
        with_kwargs=True)
    batch = _batches()[0]
    with torch.no_grad():
        model(**batch)
    h.remove()
    mask = batch["attention_mask"].bool()
    cos = torch.nn.functional.cosine_similarity(grabbed["x"][mask].double(),
                                                grabbed["y"][mask].double(), dim=-1).mean()
    assert angular_distances(model, [batch], 1)[0] == pytest.approx(math.acos(cos) / math.pi,
                                                                     abs=1e-6)


def test_every_and_errors():
    model = tiny_random_model(layers=6, hidden=32)
    assert choose_layers(model, None, keep=2, method="every", every=3).kept == [0, 3]
    with pytest.raises(SpectrumKDError, match="keep=6"):
        choose_layers(model, _batches(), keep=6)
    with pytest.raises(SpectrumKDError, match="calibration"):
        choose_layers(model, None, keep=3)
    with pytest.raises(SpectrumKDError, match="unknown pruning method"):
        choose_layers(model, None, keep=3, method="random")


def test_pruned_model_keeps_chosen_layers_outputs():
    """Removing identity layers leaves the logits unchanged."""
    model = tiny_random_model(layers=4, hidden=32)
    _silence(model, [1, 2])
    choice = choose_layers(model, _batches(), keep=2)
    student = prune_layers(model, choice.kept)
    batch = _batches()[0]
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, student(**batch).logits, atol=1e-5)


def test_refine_lets_the_judge_pick_among_the_closest_blocks():
    model = tiny_random_model(layers=6, hidden=32)
    one = choose_layers(model, _batches(), keep=4, refine=1)
    ranked = sorted(range(5), key=lambda s: (one.scores[s], s))
    assert one.removed[0] == ranked[0]
    seen = []

    def judge(kept):  # prefers the third-closest block
        seen.append(kept)
        start = next(i for i in range(6) if i not in kept)
        return 0.0 if start == ranked[2] else 1.0

    many = choose_layers(model, _batches(), keep=4, refine=3, judge=judge)
    assert many.removed == [ranked[2], ranked[2] + 1] and len(seen) == 3
    with pytest.raises(SpectrumKDError, match="judge"):
        choose_layers(model, _batches(), keep=4, refine=3)
