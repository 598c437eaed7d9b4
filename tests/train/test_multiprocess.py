"""Two CPU processes (gloo, torchrun) give the same losses as one process at the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
