"""Shared-vocabulary slicing and the tokenizer check."""

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.losses import check_tokenizers_match, kd_loss, shared_vocab_logits


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def test_slices_to_shared_length_never_pads():
    s, t = torch.randn(2, 3, 151936), torch.randn(2, 3, 152064)
    s2, t2 = shared_vocab_logits(s, t, 151665)
    assert s2.shape[-1] == t2.shape[-1] == 151665
    assert s2.data_ptr() == s.data_ptr()  # a view, no copy
    y = torch.zeros(2, 3, dtype=torch.long)
    assert torch.isfinite(kd_loss(s2, t2, y).total)
    with pytest.raises(SpectrumKDError, match="cannot share"):
        shared_vocab_logits(s, t, 152000)


def test_tokenizer_check_names_the_differing_token():
    a = _Tok({"<s>": 0, "hello": 1, "world": 2})
    assert check_tokenizers_match(a, _Tok({"world": 2, "<s>": 0, "hello": 1})) == 3
    with pytest.raises(SpectrumKDError, match="token '(hello|world)' has id"):
        check_tokenizers_match(a, _Tok({"<s>": 0, "hello": 2, "world": 1}))
    with pytest.raises(SpectrumKDError, match="tokenizers differ"):
        check_tokenizers_match(a, _Tok({"<s>": 0, "hello": 1}))
