"""The README's plug-in section and examples/ run as written, on tiny models.

The README block between ``<!-- readme-python:begin -->`` and ``<!-- readme-python:end -->`` is
executed verbatim; the test only supplies what the block says is yours (``model``, ``tokenizer``,
``run/scores.jsonl``, ``train.jsonl``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Trainers set accelerate's process-wide state; leave none behind for the next test."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def readme_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- readme-python:begin -->\n```python\n(.*?)```\n<!-- readme-python:end -->",
                  text, re.S)
    assert m, "README.md lost its readme-python markers"
    return m.group(1)


def readme_losses_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- readme-losses:begin -->\n```python\n(.*?)```\n<!-- readme-losses:end -->",
                  text, re.S)
    assert m, "README.md lost its readme-losses markers"
    return m.group(1)


def test_readme_plug_in_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """The block reads step 2's scores and step 1's student; here: 20 scored packaged Dolly rows
    and a tiny random model saved where the student would be."""
    pytest.importorskip("trl", reason="the README block uses TRL's SFTTrainer (pip install trl)")
    import datasets

    from spectrumkd.data import load_records
    from spectrumkd.models import save_model, tiny_random_model, tiny_tokenizer

    ids = [r.id for r in load_records("spectrumkd:dolly/train.jsonl", limit=20)]
    scores = tmp_path / "runs" / "spectrumkd" / "scores.jsonl"
    scores.parent.mkdir(parents=True)
    with open(scores, "w") as f:
        f.write(json.dumps({"spectrumkd": "scores", "metric": "ce"}) + "\n")
        for i, rid in enumerate(ids):
            f.write(json.dumps({"id": rid, "score": 1.0 + (i * 7) % 20 / 10}) + "\n")
    save_model(tiny_random_model(layers=1, hidden=32, seed=1), tmp_path / "students" / "smollm2-20",
               tokenizer=tiny_tokenizer())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    namespace: dict = {}
    exec(compile(readme_block(), "README.md:readme-python", "exec"), namespace)
    plan, trainer, dataset = namespace["plan"], namespace["trainer"], namespace["dataset"]
    assert sorted(dataset["id"]) == sorted(ids)  # the scored rows, by the scores file's ids
    history = trainer.curriculum.history
    assert plan.num_epochs == 5 and len(history) == 5
    assert [(h.epoch, h.temperature, h.examples) for h in history] == [
        (e.epoch, e.temperature, len(e.ids)) for e in plan.epochs
    ]
    assert history[-1].temperature == 2.0
    assert "AppliedEpoch(epoch=5, temperature=2.0" in capsys.readouterr().out


def test_readme_losses_block_runs_as_written(capsys):
    exec(compile(readme_losses_block(), "README.md:readme-losses", "exec"), {})
    value = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert value > 0


def test_plain_torch_loop_example_trains_each_epoch_on_the_plan():
    spec = importlib.util.spec_from_file_location("plain_torch_loop",
                                                  REPO / "examples" / "plain_torch_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plan, history = module.main(epochs=4)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for h, e in zip(history, plan.epochs):
        assert sorted(h["ids"]) == sorted(e.ids)
        assert h["temperature"] == e.temperature
    assert history[-1]["temperature"] == 2.0
    assert history[-1]["loss"] < history[0]["loss"]


def _extra_requirements(extra: str, optional: dict) -> set[str]:
    """Distribution names an extra installs, following ``spectrumkd[a,b]`` self-references."""
    names: set[str] = set()
    for req in optional[extra]:
        name = re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower()
        if name == "spectrumkd":
            for sub in re.search(r"\[(.*)\]", req).group(1).split(","):
                names |= _extra_requirements(sub.strip(), optional)
        else:
            names.add(name.replace("_", "-"))
    return names


def test_all_extra_installs_what_every_readme_python_block_imports():
    import importlib.metadata

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    installed = _extra_requirements("all", optional)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    modules = set()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        modules |= set(re.findall(r"^(?:from|import) (\w+)", block, re.M))
    dists = importlib.metadata.packages_distributions()
    assert "trl" in modules  # the plug-in block; the test is about its extra
    missing = {m: dists.get(m) for m in modules - {"spectrumkd"}
               if not {d.lower() for d in dists.get(m, [m])} & installed}
    assert not missing, f"README imports these but .[all] does not install them: {missing}"
