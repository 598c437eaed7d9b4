"""Every shipped YAML parses into the trainer's RunConfig, and its header names a working command.

The torchtune/litgpt habit: a config that does not load, or whose documented command carries an
override the loader rejects, fails here rather than on a user's GPU hours later. The paper's
settings (Appendix C.3) are pinned too, so an edit that drifts from the paper is noticed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from spectrumkd.cli import build_parser
from spectrumkd.experiment import load_experiment
from spectrumkd.train.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
# configs/accelerate/ holds accelerate launcher files, not run configs (tests/train/test_fsdp.py).
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in p.parts)
PAPER = REPO / "configs" / "paper"
LOSS_OVERRIDES = [
    "loss.divergence=fkl",
    "loss.divergence=rkl",
    "loss.divergence=jsd",
    "loss.divergence=tvd",
    "loss.divergence=skl",
    "loss.divergence=srkl",
    "loss.mode=gkd",
    "loss.mode=sft",
]


def header(path: Path) -> list[str]:
    """The leading comment block, without the '#'."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def commands(path: Path) -> list[list[str]]:
    """Argument lists of the ``spectrumkd`` commands the header documents (``--config`` onwards)."""
    out = []
    for line in header(path):
        words = shlex.split(line) if "--config" in line else []
        at = words.index("--config") if words else 0
        if any("spectrumkd" in w or w == "accelerate" for w in words[:at]):
            out.append(words[at - 1 :])  # subcommand, --config, FILE, overrides...
    return out


def test_there_are_paper_configs():
    names = {p.name for p in PAPER.glob("*.yaml")}
    assert names >= {
        "gpt2-dolly.yaml",
        "openllama2-dolly.yaml",
        "qwen2.5-math.yaml",
        "qwen2.5-coder.yaml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_header_names_a_command_for_this_file(path: Path):
    cmds = commands(path)
    assert cmds, f"{path}: the leading comment must give the command that runs it"
    rel = str(path.relative_to(REPO))
    assert any(c[2] == rel for c in cmds), f"{path}: no header command has --config {rel}"


DEMO = REPO / "configs" / "demo.yaml"


def is_experiment(path: Path) -> bool:
    """An experiment config: an ``experiment`` section beside a ``run`` section (a distill config)."""
    return "experiment" in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_and_its_documented_commands_load(path: Path):
    if is_experiment(path):
        exp, cfg, arms = load_experiment(path)
        assert exp.eval.limit >= 1 and exp.baseline in arms
    else:
        cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    for words in commands(path):
        # The real CLI parser: the flags exist and the overrides are where it expects them.
        args = build_parser().parse_args(words)
        assert (REPO / args.config).is_file(), f"{path}: header names missing file {args.config}"
        if words[0] == "distill":
            load_config(REPO / args.config, args.overrides)
        if words[0] in ("demo", "experiment"):
            load_experiment(REPO / args.config, args.overrides)


def test_demo_config_errors_name_the_key():
    from spectrumkd import SpectrumKDError

    with pytest.raises(SpectrumKDError, match="unknown keys \\['limt'\\]"):
        load_experiment(DEMO, ["experiment.eval.limt=3"])
    with pytest.raises(SpectrumKDError, match="did you mean 'run.curriculum.epochs'"):
        load_experiment(DEMO, ["run.curriculum.epoch=3"])
    exp, cfg, arms = load_experiment(DEMO, ["experiment.eval.limit=3", "run.curriculum.epochs=4"])
    assert exp.eval.limit == 3 and cfg.curriculum.epochs == 4
    assert arms["full"].curriculum.epochs == 3  # round(0.8 × 4)


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.yaml")), ids=lambda p: p.name)
def test_paper_config_header_gives_a_multi_gpu_command(path: Path):
    text = "\n".join(header(path))
    assert "accelerate launch --num_processes 4" in text
    assert "curriculum.kind=none" in text, "the baseline command is documented"
    for override in LOSS_OVERRIDES[1:]:
        assert override in text, f"{path}: header does not list {override}"


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("override", LOSS_OVERRIDES)
def test_every_kd_loss_is_one_override_away(path: Path, override: str):
    cfg = load_config(path, [override])
    key, value = override.split("=")
    assert getattr(cfg.loss, key.split(".")[1]) == value
    expected_alpha = {"kd": 0.3, "gkd": 0.0, "sft": 1.0}[cfg.loss.mode]
    assert cfg.loss.ce_weight == expected_alpha  # the paper's α per mode (Appendix C.3)
    if cfg.loss.mode == "gkd":
        assert cfg.loss.divergence == "jsd"
    base = load_config(path, [override, "curriculum.kind=none"])
    assert base.curriculum.kind == "none"


# Appendix C.3, setting by setting: (teacher, student, data, epochs, warm-up, baseline epochs, LoRA).
PAPER_SETTINGS = {
    "gpt2-dolly.yaml": ("gpt2-xl", "gpt2", "databricks/databricks-dolly-15k", 25, 5, 20, False),
    "openllama2-dolly.yaml": (
        "openlm-research/open_llama_7b_v2",
        "openlm-research/open_llama_3b_v2",
        "databricks/databricks-dolly-15k",
        25, 5, 20, True,
    ),  # fmt: skip
    "qwen2.5-math.yaml": (
        "Qwen/Qwen2.5-Math-7B-Instruct", "Qwen/Qwen2.5-Math-1.5B", "meta-math/MetaMathQA",
        5, 2, 4, True,
    ),  # fmt: skip
    "qwen2.5-coder.yaml": (
        "Qwen/Qwen2.5-Coder-7B-Instruct", "Qwen/Qwen2.5-Coder-1.5B",
        "nickrosh/Evol-Instruct-Code-80k-v1", 5, 2, 4, True,
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_paper_settings(name: str):
    teacher, student, data, epochs, warmup, base_epochs, lora = PAPER_SETTINGS[name]
    path = PAPER / name
    cfg = load_config(path)
    assert (cfg.teacher.spec, cfg.student.spec, cfg.data.source) == (teacher, student, data)
    assert (cfg.curriculum.kind, cfg.curriculum.epochs, cfg.curriculum.warmup_epochs) == (
        "spectrumkd", epochs, warmup,
    )  # fmt: skip
    assert (cfg.curriculum.lambda_a, cfg.curriculum.lambda_b) == (0.1, 0.1)
    assert (cfg.curriculum.tau0, cfg.curriculum.taun) == (1.0, 2.0)
    assert (cfg.loss.mode, cfg.loss.divergence, cfg.loss.ce_weight) == ("kd", "fkl", 0.3)
    assert cfg.lora.enabled is lora
    if lora:
        assert set(cfg.lora.target_modules) == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
        }  # fmt: skip
    baseline = [c for c in commands(path) if "curriculum.kind=none" in c]
    assert baseline and f"curriculum.epochs={base_epochs}" in baseline[0]
    if name.startswith("qwen"):
        # 20K train + 2K validation, lr 5e-5, effective batch 128 on the header's 4 processes.
        assert cfg.data.limit - cfg.validation.size == 20_000 and cfg.validation.size == 2_000
        assert cfg.optim.lr == 5e-5
        assert cfg.optim.batch_size * cfg.optim.grad_accumulation * 4 == 128
    else:
        assert cfg.data.limit - cfg.validation.size == 12_500 and cfg.validation.size == 1_000
        assert cfg.optim.lr in (5e-4, 1e-4, 5e-5)
        assert cfg.optim.batch_size * cfg.optim.grad_accumulation * 4 in (8, 16)
