"""Sharded training (FSDP2) on CPU with gloo: 2 processes equal 1, and save/resume is exact.

What is tested and why this way (issue 14.3): torch 2.13's FSDP2 (``fully_shard``) runs on CPU
with gloo, but accelerate 1.15 does not select FSDP on CPU: ``AcceleratorState`` sets
``DistributedType.FSDP`` only inside its accelerator-device branch, so ``accelerate launch`` with an
FSDP config and ``use_cpu: true`` runs plain ``MULTI_CPU`` data parallelism (asserted below, so
that a change in accelerate is noticed). The FSDP tests therefore drive ``fully_shard`` directly
(``fsdp_worker.py``) with the library's models, collator, loss and checkpoints;
``spectrumkd.train.loop.train`` under accelerate's FSDP is exercised only on GPUs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fsdp_worker.py")
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, *extra: str, procs: int = 2) -> dict:
    if procs == 1:
        cmd = [sys.executable, str(WORKER), str(out), *extra]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(_free_port()), str(WORKER), str(out), *extra]  # fmt: skip
    done = subprocess.run(cmd, env=ENV, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    return _run(tmp / "one.json", procs=1), _run(tmp / "two.json", procs=2)


def test_fsdp_two_processes_equal_one_process(uninterrupted):
    one, two = uninterrupted
    assert (one["world"], two["world"]) == (1, 2)
    assert len(one["losses"]) == len(two["losses"]) == 4
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert one["losses"][-1] < one["losses"][0]  # it trains


def test_fsdp_save_and_resume_equals_uninterrupted(tmp_path, uninterrupted):
    one, two = uninterrupted
    ck = tmp_path / "ck"
    first = _run(tmp_path / "a.json", "--save", str(ck), "--stop-after", "2")
    assert first["losses"] == pytest.approx(two["losses"][:2], rel=1e-6)
    # The library's checkpoint, gathered from the shards: whole tensors, optimizer keyed by name.
    import torch
    from safetensors.torch import load_file

    gen = ck / "checkpoints" / "gen-000001"
    assert torch.load(gen / "state.pt", weights_only=True)["optimizer_keys"] == "names"
    assert load_file(gen / "trainable.safetensors")["model.embed_tokens.weight"].shape[0] > 1000
    resumed = _run(tmp_path / "b.json", "--resume", str(ck))
    assert resumed["start"] == 2
    assert resumed["losses"] == pytest.approx(two["losses"][2:], rel=1e-6)
    # The checkpoint holds full (unsharded) tensors: one process resumes it too.
    single = _run(tmp_path / "c.json", "--resume", str(ck), procs=1)
    assert single["losses"] == pytest.approx(one["losses"][2:], rel=1e-5)


def test_fsdp_accelerate_on_cpu_is_multi_cpu_not_fsdp(tmp_path):
    """Documents why the tests above bypass accelerate (see the module docstring)."""
    cfg = (REPO / "configs" / "accelerate" / "fsdp.yaml").read_text()
    cfg = cfg.replace("num_processes: 4", "num_processes: 2").replace("use_cpu: false", "use_cpu: true")
    cfg = cfg.replace("mixed_precision: bf16", "mixed_precision: 'no'")
    (tmp_path / "fsdp-cpu.yaml").write_text(cfg)
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys\nfrom accelerate import Accelerator\na = Accelerator(cpu=True)\n"
        "if a.is_main_process:\n    open(sys.argv[1], 'w').write(json.dumps(str(a.distributed_type)))\n"
    )
    out = tmp_path / "type.json"
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(tmp_path / "fsdp-cpu.yaml"), "--main_process_port", str(_free_port()), str(probe),
         str(out)], env=ENV, timeout=300, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(out.read_text()) == "DistributedType.MULTI_CPU"


@pytest.mark.parametrize("name", ["fsdp.yaml", "deepspeed-zero2.yaml", "deepspeed-zero3.yaml"])
def test_fsdp_and_deepspeed_configs_load_in_accelerate(name):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(REPO / "configs" / "accelerate" / name)
    assert cfg.num_processes == 4 and cfg.mixed_precision == "bf16"
    if name == "fsdp.yaml":
        assert cfg.distributed_type == "FSDP" and cfg.fsdp_config["fsdp_version"] == 2
    else:
        assert cfg.distributed_type == "DEEPSPEED"
        assert cfg.deepspeed_config["zero_stage"] == (2 if "zero2" in name else 3)
