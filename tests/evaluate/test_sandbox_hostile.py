"""Hostile completions: the escapes and fake passes of issue 11, each as a test.

Every program here either tries to reach outside its sandbox (spawn a shell, write or delete host
files, read the evaluator's environment, outlive the deadline, flood the evaluator with output)
or tries to score a wrong solution as passed (steal the pass token from a frame, print it from an
excepthook, return an object whose ``__eq__`` is always True, rebind ``builtins.abs``, write a fake
verdict to its pipes). None may escape, none may pass; the host side checks what happened.
Isolation tests need bubblewrap (``apt-get install bubblewrap``) and are skipped without it; the
fake-pass tests run in both isolation modes, since the verdict must not depend on the sandbox.
"""

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc
import uuid

import pytest

from spectrumkd.evaluate import code as c

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap",
)
# The audit hook is off: the OS sandbox alone must stop every escape.
LIMITS = c.SandboxLimits(timeout=5.0, memory_bytes=512 << 20, audit_hook=False)
MODES = [pytest.param("bwrap", marks=needs_bwrap), "none"]


def _limits(**changes):
    return dataclasses.replace(LIMITS, **changes)


# A raw spawn below the audit hooks: `_posixsubprocess.fork_exec` is not audited (CPython 3.11
# argument list; on another version the call raises TypeError and the test proves less).
SPAWN = '''
import _posixsubprocess, os
def spawn(argv, setsid=False):
    r, w = os.pipe()
    return _posixsubprocess.fork_exec(
        [os.fsencode(a) for a in argv], [os.fsencode(argv[0])], False, (), None, None,
        -1, -1, -1, -1, -1, -1, r, w, False, setsid, -1, None, None, None, -1, None, False)
'''


def test_spawn_helper_works_outside_the_sandbox(tmp_path):
    """The hostile spawn really spawns when nothing stops it (else the tests below prove less)."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the fork_exec argument list is CPython 3.11's")
    mark = tmp_path / "mark"
    namespace = {}
    exec(SPAWN, namespace)
    pid = namespace["spawn"](["/bin/sh", "-c", f"touch {mark}"])
    os.waitpid(pid, 0)
    assert mark.exists()


@needs_bwrap
def test_fork_exec_cannot_run_a_shell_on_the_host(tmp_path):
    mark = tmp_path / "ran-as"
    program = SPAWN + (
        f"pid = spawn(['/bin/sh', '-c', 'id -u > {mark}'])\n"
        "os.waitpid(pid, 0)\n"
        f"assert os.path.exists({str(mark)!r})\n"
    )
    result = c.run_program(program, limits=LIMITS)
    assert not result.passed
    assert not mark.exists()
    assert "PermissionError" in result.stderr  # seccomp refused the fork itself


@needs_bwrap
def test_fork_exec_with_processes_allowed_stays_inside(tmp_path):
    """With forks allowed (max_processes > 1) the shell runs, as nobody, and sees no host."""
    mark = tmp_path / "ran-as"
    program = SPAWN + (
        "r, w = os.pipe()\n"
        f"pid = spawn(['/bin/sh', '-c', 'id -u >&2; touch {mark}; ls {tmp_path} >&2'])\n"
        "print(os.waitpid(pid, 0)[1], flush=True)\n"
        f"assert os.path.exists({str(mark)!r})\n"
    )
    result = c.run_program(program, limits=_limits(max_processes=16))
    assert not result.passed
    assert not mark.exists()
    assert "65534" in result.stderr and "No such file or directory" in result.stderr


def _write_tricks(target_dir, victim, shm_name):
    t, v = str(target_dir), str(victim)
    return {
        "chdir": f"import os\nos.chdir({t!r})\nopen('made', 'w').write('x')\n",
        "dir_fd_create": (f"import os\nfd = os.open({t!r}, os.O_RDONLY)\n"
                          "os.close(os.open('made', os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n"),
        "dir_fd_delete": (f"import os\nfd = os.open({str(victim.parent)!r}, os.O_RDONLY)\n"
                          f"os.unlink({victim.name!r}, dir_fd=fd)\n"),
        "mkfifo": f"import os\nos.mkfifo({t + '/made'!r})\n",
        "mknod": f"import os, stat\nos.mknod({t + '/made'!r}, stat.S_IFREG | 0o644)\n",
        "sqlite3": (f"import sqlite3\ndb = sqlite3.connect({t + '/made'!r})\n"
                    "db.execute('create table t (x)')\ndb.commit()\n"),
        "rename_dst_dir_fd": (f"import os\nopen('local', 'w').write('x')\n"
                              f"fd = os.open({t!r}, os.O_RDONLY)\n"
                              "os.rename('local', 'made', dst_dir_fd=fd)\n"),
        "dev_shm": (f"import sqlite3\ndb = sqlite3.connect('/dev/shm/{shm_name}')\n"
                    "db.execute('create table t (x)')\ndb.commit()\n"),
        "victim_truncate": f"import os\nos.truncate({v!r}, 0)\n",
    }


@needs_bwrap
@pytest.mark.parametrize("trick", sorted(_write_tricks("/x", __import__("pathlib").Path("/y/z"),
                                                         "s")))
def test_writes_outside_the_work_dir_do_not_reach_the_host(tmp_path, trick):
    target = tmp_path / "target"
    target.mkdir()
    victim = tmp_path / "victim" / "keep.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    shm_name = f"spectrumkd-test-{uuid.uuid4().hex}"
    program = _write_tricks(target, victim, shm_name)[trick]
    result = c.run_program(program + "\nraise SystemExit(0)\n", limits=LIMITS)
    assert list(target.iterdir()) == [], result
    assert victim.read_text() == "keep me"
    assert not os.path.exists(f"/dev/shm/{shm_name}")
    assert not result.passed  # it raised (read-only, missing) or exited early


@needs_bwrap
def test_evaluator_environment_does_not_leak(tmp_path):
    """The secret is in the evaluator's environment from its start, as a real API key would be."""
    secret = "sk-" + uuid.uuid4().hex
    program = (
        "import os\n"
        "found = []\n"
        "for pid in ['self', str(os.getppid())] + [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n"
        "        data = open(f'/proc/{pid}/environ', 'rb').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    found += [x for x in data.split(b'\\0') if b'SECRET' in x]\n"
        "print(found)\n"
        "assert found\n"
    )
    evaluator = (
        "import json, sys\nfrom spectrumkd.evaluate import code as c\n"
        "r = c.run_program(sys.stdin.read(), limits=c.SandboxLimits(timeout=5.0, audit_hook=False))\n"
        "print(json.dumps([r.passed, r.stdout, r.stderr]))\n"
    )
    env = {**os.environ, "SPECTRUMKD_TEST_SECRET": secret}
    proc = subprocess.run([sys.executable, "-c", evaluator], input=program, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    passed, stdout, stderr = json.loads(proc.stdout.splitlines()[-1])
    assert not passed
    assert secret not in stdout + stderr


def _host_processes_with(marker):
    hits = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        hits.append(pid)
            except OSError:
                continue
    return hits


@needs_bwrap
def test_session_children_die_at_the_deadline():
    marker = f"spectrumkd-marker-{uuid.uuid4().hex}"
    program = SPAWN + (
        f"spawn(['/bin/sh', '-c', 'sleep 40; echo {marker}'], setsid=True)\n"
        "print('spawned', flush=True)\n"
        "while True:\n    pass\n"
    )
    limits = _limits(timeout=3.0, max_processes=16)  # let it fork: the namespace kill is tested
    started = time.monotonic()
    result = c.run_program(program, limits=limits)
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert result.stdout.strip() == "spawned"  # the child did start: the namespace kill is tested
    assert elapsed < limits.timeout + 2.5, elapsed
    deadline = time.monotonic() + 2.0
    while _host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _host_processes_with(marker)


OUTPUT_BYTES = 1536 << 20  # 1.5 GiB


@needs_bwrap
def test_huge_output_is_capped_and_does_not_pass():
    program = ("import sys\nchunk = 'x' * (1 << 20)\n"
               f"for _ in range({OUTPUT_BYTES >> 20}):\n    sys.stdout.write(chunk)\n")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = c.run_program(program, limits=_limits(timeout=30.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert not result.passed
    assert "output over" in result.reason
    assert peak < 64 << 20, peak
    assert grown_kib < 256 << 10, grown_kib
    assert time.monotonic() - started < 20


# ----------------------------------------------------------------------------- fake passes

PROMPT = 'def add(a, b):\n    """The sum of a and b."""\n'
TEST = (
    "def check(candidate):\n"
    "    assert candidate(1, 1) == 2\n"
    "    assert abs(candidate(2, 3) - 5) < 1e-9\n"
    "    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n"
)
STEAL = (
    "import os, sys\n"
    "def _strings():\n"
    "    frame, seen = sys._getframe(), []\n"
    "    while frame is not None:\n"
    "        for scope in (frame.f_locals, frame.f_globals):\n"
    "            seen += [v for v in list(scope.values()) if isinstance(v, str)]\n"
    "        frame = frame.f_back\n"
    "    return sorted(seen, key=lambda s: s.startswith('SPECTRUMKD-PASS-'))  # the old token last\n"
)
FAKES = {
    "frame_token": "    return 0\n" + STEAL + (
        "print('\\n'.join(_strings()))\nsys.stdout.flush()\nos._exit(0)\n"),
    "excepthook_token": "    return 0\n" + STEAL + (
        "_loot = _strings()\n"
        "def _hook(*exc):\n"
        "    print('\\n'.join(_strings() + _loot))\n"
        "    sys.stdout.flush()\n    os._exit(0)\n"
        "sys.excepthook = _hook\n"),
    "always_equal": (
        "    class Anything:\n"
        "        __eq__ = lambda self, other: True\n"
        "        __sub__ = __rsub__ = __abs__ = lambda self, *other: self\n"
        "        __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: True\n"
        "        __bool__ = lambda self: True\n"
        "    return Anything()\n"),
    "rebind_abs": (
        "    return 2 if (a, b) == (1, 1) else 0\n"
        "import builtins\nbuiltins.abs = lambda x: 0\n"),
    "fake_verdict_on_every_fd": (
        "    return 0\n"
        "import os, json\n"
        "line = (json.dumps({'status': 'passed', 'ok': True, 'value': 5}) + '\\n').encode()\n"
        "for fd in range(64):\n"
        "    try:\n        os.write(fd, line * 8)\n    except OSError:\n        pass\n"
        "os._exit(0)\n"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("trick", sorted(FAKES))
def test_fake_passes_fail(trick, mode):
    limits = _limits(isolation=mode)
    job = c.humaneval_program(PROMPT, FAKES[trick], TEST, "add")
    assert not c.run_program(job, limits=limits).passed


@pytest.mark.parametrize("mode", MODES)
def test_the_fake_pass_task_itself_scores(mode):
    limits = _limits(isolation=mode)
    right = c.humaneval_program(PROMPT, "    return a + b\n", TEST, "add")
    wrong = c.humaneval_program(PROMPT, "    return a - b\n", TEST, "add")
    assert c.run_program(right, limits=limits).passed
    assert not c.run_program(wrong, limits=limits).passed
