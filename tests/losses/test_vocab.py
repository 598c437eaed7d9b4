"""Shared-vocabulary slicing (the tokenizer check is tested with ``models`` in test_models.py)."""

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.losses import kd_loss, shared_vocab_logits


def test_slices_to_shared_length_never_pads():
    s, t = torch.randn(2, 3, 151936), torch.randn(2, 3, 152064)
    s2, t2 = shared_vocab_logits(s, t, 151665)
    assert s2.shape[-1] == t2.shape[-1] == 151665
    assert s2.data_ptr() == s.data_ptr()  # a view, no copy
    y = torch.zeros(2, 3, dtype=torch.long)
    assert torch.isfinite(kd_loss(s2, t2, y).total)
    with pytest.raises(SpectrumKDError, match="cannot share"):
        shared_vocab_logits(s, t, 152000)
