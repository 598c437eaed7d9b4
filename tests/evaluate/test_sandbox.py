"""The trusted-verdict machinery and the isolation policy: the plain-value codec, proxies, MBPP
jobs, the seccomp filter, and the refusal (one line, naming the package) without bubblewrap."""

import json
import math
import os
import shutil
import struct
import subprocess
import sys

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate import code as c
from spectrumkd.evaluate import sandbox
from spectrumkd.evaluate import sandbox_child as child

ISOLATION = "bwrap" if shutil.which("bwrap") else "none"
LIMITS = c.SandboxLimits(timeout=5.0, memory_bytes=256 << 20, isolation=ISOLATION)
PROMPT = 'def f(x):\n    """Something of x."""\n'


def _job(body, test, prompt=PROMPT, entry="f"):
    return c.humaneval_program(prompt, body, test, entry)


# ----------------------------------------------------------------------------- codec


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**80, 1.5, -0.0, math.inf, "ünï", b"\x00\xff", 1 + 2j,
    [1, [2, (3, 4)]], (), (1,), {"a": 1, 2: (3,), (4, 5): None}, {1, 2}, frozenset({(1, 2)}),
])
def test_codec_round_trips_plain_values(value):
    wire = json.loads(json.dumps(child.encode(value)))
    back = child.decode(wire)
    assert back == value and type(back) is type(value)


def test_codec_keeps_nan_and_converts_subclasses():
    assert math.isnan(child.decode(json.loads(json.dumps(child.encode(math.nan)))))
    import collections
    import enum

    point = collections.namedtuple("Point", "x y")(1, 2)
    assert child.decode(child.encode(point)) == (1, 2)
    assert type(child.decode(child.encode(enum.IntEnum("E", "A").A))) is int


def test_codec_refuses_what_is_not_plain():
    class Anything:
        def __eq__(self, other):
            return True

    for value in (Anything(), iter([1]), lambda: 1, object(), [[]] * 0 + [Anything()]):
        with pytest.raises(child.Unsendable):
            child.encode(value)
    nested = []
    for _ in range(child.MAX_DEPTH + 5):
        nested = [nested]
    with pytest.raises(child.Unsendable):
        child.encode(nested)
    for wire in ({"t": "tuple"}, {"t": "evil", "v": []}, {"a": 1}, {"t": "dict", "v": 3}):
        with pytest.raises((ValueError, TypeError)):
            child.decode(wire)


# ----------------------------------------------------------------------------- verdicts


def test_tuple_results_and_exceptions_keep_their_types():
    test = ("def check(candidate):\n"
            "    assert candidate(2) == (2, 4)\n"
            "    try:\n        candidate(-1)\n    except ValueError as e:\n"
            "        assert 'negative' in str(e)\n"
            "    else:\n        raise AssertionError('no ValueError')\n")
    body = ("    if x < 0:\n        raise ValueError('negative x')\n    return (x, 2 * x)\n")
    assert c.run_program(_job(body, test), limits=LIMITS).passed
    assert not c.run_program(_job("    return [x, 2 * x]\n", test), limits=LIMITS).passed


def test_unsendable_return_fails_even_when_the_test_swallows_errors():
    test = ("def check(candidate):\n"
            "    try:\n        candidate(1)\n    except:\n        pass\n")
    result = c.run_program(_job("    return iter([x])\n", test), limits=LIMITS)
    assert not result.passed and "cannot send" in result.reason
    result = c.run_program(_job("    import os\n    os._exit(0)\n", test), limits=LIMITS)
    assert not result.passed and "broken" in result.reason


def test_prints_and_exit_codes_do_not_decide():
    test = "def check(candidate):\n    assert candidate(3) == 9\n"
    noisy_right = "    print('FAILED', flush=True)\n    return x * x\n"
    assert c.run_program(_job(noisy_right, test), limits=LIMITS).passed
    quiet_wrong = "    return x\nprint('passed (1 calls)')\n"
    result = c.run_program(_job(quiet_wrong, test), limits=LIMITS)
    assert not result.passed and "AssertionError" in result.reason


def test_missing_function_and_no_calls_fail():
    test = "def check(candidate):\n    assert candidate(3) == 9\n"
    result = c.run_program(_job("", test, prompt="def g(x):\n    return x * x\n"),
                           limits=LIMITS)
    assert not result.passed and "defines no function" in result.reason
    idle = "def check(candidate):\n    pass\n"
    result = c.run_program(_job("    return x\n", idle), limits=LIMITS)
    assert not result.passed and "never called" in result.reason


def test_prompt_helpers_are_the_tasks_not_the_candidates():
    prompt = 'def helper(x):\n    return x + 1\n\n\ndef f(x):\n    """helper(x) * 2"""\n'
    test = "def check(candidate):\n    assert candidate(1) == helper(1) * 2\n"
    # the candidate redefines helper to make its wrong answer look right: the check uses the task's
    cheat = "    return 0\n\n\ndef helper(x):\n    return -1\n"
    assert not c.run_program(c.humaneval_program(prompt, cheat, test, "f"), limits=LIMITS).passed
    right = "    return helper(x) * 2\n"
    assert c.run_program(c.humaneval_program(prompt, right, test, "f"), limits=LIMITS).passed


def test_mbpp_job_names_and_modules():
    test = ("assert similar((3, 4, 5), (5, 4)) == (4, 5)\n"
            "assert math.isclose(area(2), 4 * math.pi)\n"
            "assert sorted(set(similar((1, 2), (2, 1)))) == [1, 2]\n")
    job = c.mbpp_program("```python\nimport math\ndef similar(a, b):\n"
                         "    return tuple(sorted(set(a) & set(b)))\n"
                         "def area(r):\n    return math.pi * r * r\n```", test)
    assert job.names == ("area", "similar") and job.modules == ("math",)
    assert c.run_program(job, limits=LIMITS).passed
    wrong = c.mbpp_program("def similar(a, b):\n    return ()\ndef area(r):\n    return 0\n",
                           test, kind="body")
    assert not c.run_program(wrong, limits=LIMITS).passed
    with pytest.raises(SpectrumKDError, match="does not parse"):
        c.mbpp_program("x = 1", "assert f(1) ==")


def test_run_programs_keeps_order():
    programs = [f"assert {i} % 2 == 0" for i in range(6)]
    statuses = [r.status for r in c.run_programs(programs, limits=LIMITS, workers=3)]
    assert statuses == ["passed", "failed"] * 3


# ----------------------------------------------------------------------------- isolation


def test_seccomp_filter_shape():
    prog = sandbox.seccomp_filter("x86_64")
    assert len(prog) % 8 == 0
    codes = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    assert codes[-1] == (0x06, 0, 0, 0x7FFF0000)  # the last instruction allows
    assert (0x15, 0, 1, 57) in codes and (0x15, 0, 1, 58) in codes  # fork, vfork
    assert (0x15, 0, 1, 319) in codes and (0x15, 0, 1, 272) in codes  # memfd_create, unshare
    assert (0x15, 0, 5, 41) in codes  # socket: its family is checked
    assert len(sandbox.seccomp_filter("aarch64")) < len(prog)  # no fork/vfork there
    forking = sandbox.seccomp_filter("x86_64", allow_fork=True)
    fork_codes = [struct.unpack("=HBBI", forking[i:i + 8]) for i in range(0, len(forking), 8)]
    assert (0x15, 0, 1, 57) not in fork_codes and (0x15, 0, 1, 319) in fork_codes
    with pytest.raises(SpectrumKDError, match="architecture"):
        sandbox.seccomp_filter("mips")


def test_tmpfs_budget_is_taken_off_the_memory_cap():
    assert sandbox.tmpfs_budget(1 << 30, 16 << 20) == 64 << 20
    assert sandbox.tmpfs_budget(128 << 20, 16 << 20) == 32 << 20  # a quarter of the cap
    assert sandbox.tmpfs_budget(None, 1 << 20) == 4 << 20


def test_limits_are_validated():
    for bad in ({"isolation": "docker"}, {"timeout": 0}, {"timeout": math.nan},
                {"memory_bytes": 1024}, {"max_processes": 0}):
        with pytest.raises(SpectrumKDError):
            c.SandboxLimits(**bad)


@pytest.fixture
def no_bwrap(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_refuses_without_bwrap_unless_allowed(no_bwrap):
    with pytest.raises(SpectrumKDError, match="apt-get install bubblewrap") as info:
        c.check_isolation()
    assert "\n" not in str(info.value)
    with pytest.raises(SpectrumKDError, match="apt-get install bubblewrap"):
        c.run_program("pass")
    assert c.check_isolation(allow_unsandboxed=True) == "none"
    assert c.run_program("pass", limits=c.SandboxLimits(isolation="none")).passed


def test_refuses_when_bwrap_cannot_start(no_bwrap):
    fake = no_bwrap / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SpectrumKDError, match="cannot start a sandbox here: bwrap: setting up"):
        c.check_isolation()
    assert c.check_isolation(allow_unsandboxed=True) == "none"


def test_cli_refuses_before_writing(shared_data, tmp_path):
    data = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"})
                       + "\n")
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "spectrumkd.cli", "eval", "--suite", "code", "--data",
            str(data), "--completions", str(samples), "--limit", "1"]
    proc = subprocess.run([*base, "--out", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "apt-get install bubblewrap" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
