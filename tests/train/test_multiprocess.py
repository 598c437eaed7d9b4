"""Two CPU processes (gloo, torchrun) give the same losses as one process at the same global batch,
and together train each epoch on exactly the plan's ids with grouped batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ddp_worker import record_ids

from conftest import records, spectrum_plan
from spectrumkd.data import build_examples
from spectrumkd.models import tiny_tokenizer

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(WORKER), str(one), "4"], check=True, env=env, timeout=300,
                   capture_output=True)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), str(WORKER), str(two), "2"],
        env=env, timeout=300, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    l1, l2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert len(l1) == len(l2) == 6
    assert l2 == pytest.approx(l1, rel=1e-5)


def test_grouped_batches_train_each_epoch_on_exactly_the_plans_ids_with_two_processes(tmp_path):
    """Each process's forward passes, over both processes, see each plan epoch's ids exactly once,
    the same per-epoch multisets as one process at the same global batch."""
    examples, _ = build_examples(records(16), tiny_tokenizer(), max_length=128)
    want = {str(e.epoch): sorted(e.ids) for e in spectrum_plan(examples).epochs}
    one = record_ids(str(tmp_path / "one.json"), 4)
    assert {str(k): sorted(v) for k, v in one.items()} == want
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(_free_port()), str(WORKER), str(tmp_path / "two.json"), "2", "ids"],
        env=env, timeout=300, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"two.json.rank{r}").read_text()) for r in range(2)]
    for epoch, ids in want.items():
        shares = [ranks[r][epoch] for r in range(2)]
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1]) == ids
