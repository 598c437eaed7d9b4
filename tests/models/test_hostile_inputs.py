"""Issue 20 probes: broken model folders, hostile ranges and data files are one-line errors.

A model folder without ``config.json``, with weights cut short or a corrupt ``tokenizer.json``, a
fake ``.gguf``, a corrupt parquet file, ``tiny-random:llama?layers=-1``, ``student --every 99
--keep 2``, ``score --num-shots -1``, ``plan --epochs 10000000``, ``judge --timeout nan`` and an
experiment seed of -1 each stop with one line (exit 2 in the CLI) before any work.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.cli import main
from spectrumkd.models import load_model, load_tokenizer, save_model, tiny_tokenizer


def one_line(capsys, argv, *needles, argparse_error: bool = False) -> str:
    """Run the CLI; exit status 2 and the last stderr line holds every needle."""
    argv = [str(a) for a in argv]
    if argparse_error:  # argparse's own type check exits with status 2
        with pytest.raises(SystemExit) as exc:
            main(argv)
        rc = exc.value.code
    else:
        rc = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and lines, lines
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "good"
    save_model(load_model("tiny-random:llama?layers=1&hidden=32"), folder, tokenizer=tiny_tokenizer())
    return folder


def _broken(good: Path, tmp_path: Path, how: str) -> Path:
    folder = tmp_path / how
    shutil.copytree(good, folder)
    if how == "no-config":
        (folder / "config.json").unlink()
    elif how == "cut-weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:1000])
    elif how == "bad-tokenizer-json":
        (folder / "tokenizer.json").write_text('{"model": ')
    elif how == "tokenizer-json-shape":
        (folder / "tokenizer.json").write_text('{"model": 5}')
    return folder


@pytest.mark.parametrize(("how", "loader"), [("no-config", load_model), ("cut-weights", load_model),
                                             ("bad-tokenizer-json", load_tokenizer),
                                             ("tokenizer-json-shape", load_tokenizer)])
def test_broken_model_folders_are_one_line(good, tmp_path, how, loader):
    folder = _broken(good, tmp_path, how)
    with pytest.raises(SpectrumKDError, match="cannot load") as exc:
        loader(str(folder))
    assert str(folder) in str(exc.value) and "\n" not in str(exc.value)


def test_a_fake_gguf_is_one_line(tmp_path):
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(SpectrumKDError, match="cannot load model"):
        load_model(str(fake))


def test_a_corrupt_parquet_is_one_line(tmp_path):
    from spectrumkd.data import load_records

    bad = tmp_path / "d.parquet"
    bad.write_bytes(b"PAR1" + b"\x00garbage" * 20 + b"PAR1")
    with pytest.raises(SpectrumKDError, match="not a readable parquet file"):
        load_records(str(bad))


@pytest.mark.parametrize("spec", ["tiny-random:llama?layers=-1", "tiny-random:llama?layers=0",
                                  "tiny-random:gpt2?hidden=100000000", "tiny-random:llama?seed=-1"])
def test_tiny_spec_ranges(spec):
    with pytest.raises(SpectrumKDError, match="must be in"):
        load_model(spec)


def test_every_stride_that_contradicts_keep_is_refused():
    from spectrumkd.models import tiny_random_model
    from spectrumkd.models.importance import choose_layers

    model = tiny_random_model(layers=6, hidden=32)
    with pytest.raises(SpectrumKDError, match="every=99 keeps 1 of the 6 layers, not keep=2"):
        choose_layers(model, None, keep=2, method="every", every=99)
    with pytest.raises(SpectrumKDError, match="every=1 must be >= 2"):
        choose_layers(model, None, keep=6, method="every", every=1)
    assert choose_layers(model, None, keep=2, method="every", every=3).kept == [0, 3]


def test_cli_ranges_are_one_line(tmp_path, capsys):
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(f'{{"id": "x{i}", "score": {i + 1}}}\n' for i in range(8)))
    one_line(capsys, ["plan", "--scores", scores, "--out", tmp_path / "p.json", "--kind", "full",
                      "--epochs", "10000000"], "epochs must be in [1, 10000]")
    assert not (tmp_path / "p.json").exists()
    one_line(capsys, ["score", "--model", "tiny-random:llama", "--data", scores, "--num-shots", "-1",
                      "--out", tmp_path / "o.jsonl"], "--num-shots", argparse_error=True)
    one_line(capsys, ["judge", "--timeout", "nan"], "--timeout", argparse_error=True)
    comp = tmp_path / "c.jsonl"
    comp.write_text('{"id": "a", "completion": "x"}\n')
    for flag, value in (("--shots", "-1"), ("--timeout", "nan"), ("--memory-mb", "0"),
                        ("--seeds", "10,-1")):
        one_line(capsys, ["eval", "--completions", comp, "--sets", "dolly", flag, value, "--out",
                          tmp_path / "e"], flag)


def test_experiment_seed_minus_one_is_refused_before_any_run():
    from spectrumkd.experiment import ExperimentConfig

    with pytest.raises(SpectrumKDError, match=r"experiment.seeds: \[-1\]"):
        ExperimentConfig(seeds=[0, -1])
