"""spectrumkd.models: tiny models and tokenizer, specs, pad tokens, pruning, saving, GGUF parts."""

import hashlib

import pytest
import torch

from spectrumkd import SpectrumKDError
from spectrumkd.models import (
    check_same_tokenizer,
    concat_parts,
    ensure_pad_token,
    load_model,
    load_tokenizer,
    model_fingerprint,
    prune_layers,
    save_model,
    smollm2_gguf_path,
    tiny_random_model,
    tiny_tokenizer,
)


def test_tiny_tokenizer_is_deterministic_and_round_trips():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab() and len(a) == 1536
    text = "Below is an instruction.\n\n### Response:\nÜber 42 {x}!"
    assert a.decode(a.encode(text)) == text
    assert a.eos_token == "<|endoftext|>" and a.pad_token == "<pad>"
    assert a.encode("hi<|endoftext|>")[-1] == a.eos_token_id


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_random_spec_and_seed(arch):
    m1 = load_model(f"tiny-random:{arch}?layers=3&hidden=32&seed=1")
    m2 = tiny_random_model(arch, layers=3, hidden=32, seed=1)
    m3 = tiny_random_model(arch, layers=3, hidden=32, seed=2)
    assert m1.config.num_hidden_layers == 3 and not m1.training
    assert model_fingerprint(m1) == model_fingerprint(m2) != model_fingerprint(m3)
    ids = torch.tensor([[5, 6, 7]])
    assert m1(ids).logits.shape == (1, 3, 1536)


def test_bad_specs():
    with pytest.raises(SpectrumKDError, match="unknown option"):
        load_model("tiny-random:llama?depth=2")
    with pytest.raises(SpectrumKDError, match="unknown architecture"):
        load_model("tiny-random:bert")
    with pytest.raises(SpectrumKDError, match="does not exist"):
        load_model("/nonexistent/model.gguf")
    with pytest.raises(SpectrumKDError, match="unknown dtype"):
        load_model("tiny-random:llama", dtype="int3")


def test_pad_token_added_when_missing():
    tok = tiny_tokenizer()
    tok.pad_token = None
    assert tok.pad_token_id is None
    assert ensure_pad_token(tok).pad_token == tok.eos_token
    tok.pad_token, tok.eos_token = None, None
    with pytest.raises(SpectrumKDError, match="neither a pad nor an EOS"):
        ensure_pad_token(tok)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prune_layers_saves_and_reloads(arch, tmp_path):
    model = tiny_random_model(arch, layers=4, hidden=32)
    student = prune_layers(model, [0, 3])
    assert student.config.num_hidden_layers == 2
    assert model.config.num_hidden_layers == 4  # the original is untouched
    if arch == "llama":
        assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
        assert torch.equal(student.model.layers[1].mlp.up_proj.weight, model.model.layers[3].mlp.up_proj.weight)
    ids = torch.tensor([[5, 6, 7, 8]])
    save_model(student, tmp_path / "s", tokenizer=tiny_tokenizer())
    reloaded = load_model(str(tmp_path / "s"))
    torch.testing.assert_close(reloaded(ids).logits, student(ids).logits)
    assert model_fingerprint(reloaded) == model_fingerprint(student)
    # generation with a KV cache works with the renumbered layers
    out = student.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=1)
    assert out.shape == (1, 7)
    with pytest.raises(SpectrumKDError, match="strictly increasing"):
        prune_layers(model, [2, 1])
    with pytest.raises(SpectrumKDError, match="strictly increasing"):
        prune_layers(model, [0, 4])


def test_load_tokenizer_from_saved_folder(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    check_same_tokenizer(tok, tiny_tokenizer())


def test_check_same_tokenizer_reports_differences():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    b.add_tokens(["<new>"])
    with pytest.raises(SpectrumKDError, match=r"only in student: \['<new>'\]"):
        check_same_tokenizer(a, b)


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def test_tokenizer_check_names_the_differing_token():
    """Moved from tests/losses/test_vocab.py with the check (losses.check_tokenizers_match)."""
    a = _Tok({"<s>": 0, "hello": 1, "world": 2})
    assert check_same_tokenizer(a, _Tok({"world": 2, "<s>": 0, "hello": 1})) == 3
    with pytest.raises(SpectrumKDError, match="token '(hello|world)' has id"):
        check_same_tokenizer(a, _Tok({"<s>": 0, "hello": 2, "world": 1}))
    with pytest.raises(SpectrumKDError, match="tokenizers differ"):
        check_same_tokenizer(a, _Tok({"<s>": 0, "hello": 1}))


def test_concat_parts_in_order_with_checksum(tmp_path):
    parts = []
    for n in range(1, 12):  # part10 must come after part9: numeric order, not text order
        p = tmp_path / f"part{n:02d}.bin"
        p.write_bytes(bytes([n]) * 1000)
        parts.append(p)
    whole = b"".join(p.read_bytes() for p in parts)
    digest = hashlib.sha256(whole).hexdigest()
    out = concat_parts(parts, tmp_path / "out" / "m.gguf", sha256=digest)
    assert out.read_bytes() == whole
    with pytest.raises(SpectrumKDError, match="SHA-256"):
        concat_parts(list(reversed(parts)), tmp_path / "bad.gguf", sha256=digest)
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "bad.gguf.partial").exists()


def test_smollm2_path_is_found_or_none():
    path = smollm2_gguf_path()
    assert path is None or (path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_describe_is_the_one_spelling_of_a_model_name():
    from spectrumkd.models import describe

    assert describe("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert describe("qwen2.5-coder-0.5b", prune_layers=[0, 3, 6]) == "qwen2.5-coder-0.5b?keep=0,3,6"
    assert describe("models/smol", gguf_file="m.gguf") == "models/smol/m.gguf"
