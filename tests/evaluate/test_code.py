"""Code: canonical HumanEval passes, broken code fails; the sandbox stops loops, memory bombs,
network access, writes outside its directory and early exits; pass@k matches a brute force.

These run under bubblewrap when it is installed, else in the opt-in unsandboxed mode (the
layers that remain: rlimits, deadline, audit hook); test_sandbox_hostile.py needs bubblewrap."""

import gzip
import itertools
import json
import os
import shutil
import socket
import threading
from math import comb

import pytest

from spectrumkd.evaluate import code as c

ISOLATION = "bwrap" if shutil.which("bwrap") else "none"
FAST = c.SandboxLimits(timeout=5.0, memory_bytes=256 << 20, isolation=ISOLATION)


@pytest.fixture(scope="module")
def humaneval(shared_data):
    with gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt") as handle:
        return [json.loads(line) for line in handle]


def _program(task, completion):
    return c.humaneval_program(task["prompt"], completion, task["test"], task["entry_point"])


def test_canonical_solutions_pass(humaneval):
    assert len(humaneval) == 164
    programs = [_program(t, t["canonical_solution"]) for t in humaneval]
    results = c.run_programs(programs, limits=FAST, workers=4)
    failed = [(t["task_id"], r.stderr[-300:]) for t, r in zip(humaneval, results) if not r.passed]
    assert not failed


def test_broken_variants_fail(humaneval):
    tasks = humaneval[:12]
    broken = [_program(t, "    return None\n") for t in tasks]
    wrong_name = [
        c.humaneval_program(t["prompt"].replace(f"def {t['entry_point']}", "def other"),
                            t["canonical_solution"], t["test"], t["entry_point"])
        for t in tasks[:3]
    ]
    results = c.run_programs(broken + wrong_name, limits=FAST, workers=4)
    assert [r.status for r in results] == ["failed"] * len(results)


def test_early_exit_does_not_pass():
    for body in ("import sys\nsys.exit(0)\nassert False", "import os\nos._exit(0)",
                 "raise SystemExit"):
        assert c.run_program(body, limits=FAST).status == "failed"


def test_infinite_loop_is_stopped():
    limits = c.SandboxLimits(timeout=1.5, isolation=ISOLATION)
    result = c.run_program("while True:\n    pass\n", limits=limits)
    assert result.status == "timeout" and not result.passed
    # the next program is unaffected
    assert c.run_program("assert sum(range(10)) == 45", limits=FAST).passed


def test_memory_bomb_is_stopped():
    bomb = "x = []\nwhile True:\n    x.append(bytearray(50 * 2**20))\n"
    result = c.run_program(bomb, limits=c.SandboxLimits(timeout=20, memory_bytes=256 << 20,
                                                           isolation=ISOLATION))
    assert result.status == "failed"
    assert "MemoryError" in result.stderr
    assert c.run_program("assert len(bytearray(10**6)) == 10**6", limits=FAST).passed


def test_network_is_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    result = c.run_program(program, limits=FAST)
    thread.join()
    server.close()
    assert result.status == "failed"
    assert not accepted
    raw = f"import _socket\n_socket.socket().connect(('127.0.0.1', {port}))\n"
    assert c.run_program(raw, limits=FAST).status == "failed"


def test_writes_outside_the_sandbox_fail(tmp_path):
    target = tmp_path / "outside.txt"
    for program in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        f"import os\nos.mkdir({str(tmp_path / 'newdir')!r})",
        f"import subprocess\nsubprocess.run(['touch', {str(target)!r}])",
        f"import os\nos.system('touch {target}')",
    ):
        assert c.run_program(program, limits=FAST).status == "failed", program
    assert not target.exists() and not (tmp_path / "newdir").exists()
    inside = "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
    assert c.run_program(inside, limits=FAST).passed


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    program = (
        "import os\n"
        "assert 'HF_TOKEN' not in os.environ, os.environ\n"
        f"assert set(os.environ) <= {set(c.SANDBOX_ENV_KEYS)!r}\n"
        "assert os.getcwd() == os.environ['HOME']\n"
    )
    assert c.run_program(program, limits=FAST).passed


def test_extract_program_and_response_programs(humaneval):
    task = humaneval[0]
    answer = ("Sure! Here is the script:\n```python\nfrom typing import List\n\n"
              f"{task['prompt'].split('from typing import List')[1]}{task['canonical_solution']}"
              "```\nIt works.")
    program = c.humaneval_program(task["prompt"], answer, task["test"], task["entry_point"],
                                  kind="response")
    assert c.run_program(program, limits=FAST).passed
    body_only = f"```python\n{task['canonical_solution']}```"  # a body: the prompt is prepended
    assert "def has_close_elements" in c.extract_program(answer, "has_close_elements")
    assert c.run_program(c.humaneval_program(task["prompt"], body_only, task["test"],
                                             task["entry_point"], kind="response"),
                         limits=FAST).passed
    assert c.extract_program("no code here") == "no code here"


def _brute_pass_at_k(n, c_, k):
    outcomes = [True] * c_ + [False] * (n - c_)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c_", "k"), [(5, 0, 1), (5, 2, 1), (6, 2, 3), (7, 6, 2), (4, 4, 4)])
def test_pass_at_k_unbiased(n, c_, k):
    assert c.pass_at_k(n, c_, k) == pytest.approx(_brute_pass_at_k(n, c_, k))
    assert c.pass_at_k(n, c_, k) == pytest.approx(1 - comb(n - c_, k) / comb(n, k))


def test_mean_pass_at_k():
    assert c.mean_pass_at_k([(1, 1), (1, 0)], 1) == pytest.approx(50.0)
    assert c.mean_pass_at_k([(1, 1)], 10) is None


def test_docstring_states_isolation():
    doc = c.__doc__
    for word in ("does NOT isolate", "RLIMIT_AS", "unshare", "audit hook", "nobody"):
        assert word in doc
    assert os.name == "posix"
