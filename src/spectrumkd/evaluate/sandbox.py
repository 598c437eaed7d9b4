"""OS isolation for model-written programs: the bubblewrap command line, a no-fork seccomp filter.

:func:`bwrap_command` wraps one interpreter command in bubblewrap (Debian package
``bubblewrap``, <https://github.com/containers/bubblewrap>): new user (uid/gid 65534 inside),
pid, network, ipc, uts and (when possible) cgroup namespaces; no further user namespaces inside
(``--disable-userns`` where bwrap has it); all capabilities dropped; a read-only root that holds
only ``/usr``, the ``/bin``/``/lib*`` links, ``/etc/ld.so.cache`` and the interpreter's own
prefix (and the virtual environment, so its packages import); a fresh ``/proc`` of the new pid
namespace (no host processes, so no ``/proc/<ppid>/environ``); a minimal ``/dev``; size-limited
tmpfs mounts at ``/sandbox`` (the working directory), ``/tmp`` and ``/dev/shm``; a cleared
environment; ``--die-with-parent`` (killing bwrap kills the namespace's pid 1, and with it every
process in the namespace, ``setsid`` children included) and ``--new-session``.

:func:`no_fork_filter` is a classic-BPF seccomp program that refuses ``fork``, ``vfork``,
``clone`` without ``CLONE_THREAD`` (threads still work) and ``clone3`` (ENOSYS, so libc falls
back to ``clone``), and every syscall of a foreign ABI (x32, i386 on x86-64). It is the process
limit that holds when the evaluator runs as root: the sandbox's processes then map to host uid 0,
for which the kernel does not enforce ``RLIMIT_NPROC``.

Not here: the rlimits (set by the child itself before the program runs, see
:mod:`spectrumkd.evaluate.sandbox_child`), the deadline and the output caps (the evaluator,
:mod:`spectrumkd.evaluate.code`). Not covered: CPU and memory bandwidth shared with the host,
kernel bugs reachable through the syscalls that remain allowed, reading the files under the
bound directories (the interpreter, the virtual environment, ``/usr``).
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
import sys

from spectrumkd import SpectrumKDError

INSTALL_HINT = "apt-get install bubblewrap"
SANDBOX_UID = 65534
WORK_DIR = "/sandbox"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"

# classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h)
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000
_ARCHES = {  # audit arch and the process-creating syscalls of each
    "x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58, "clone3": 435}),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435}),
}


def no_fork_filter(machine: str | None = None) -> bytes:
    """The seccomp program (``struct sock_filter[]``) described in the module docstring."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SpectrumKDError(f"no seccomp process filter for CPU architecture {machine!r}")
    arch, nrs = _ARCHES[machine]

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    prog = [
        op(_LD_W_ABS, 4),  # seccomp_data.arch
        op(_JEQ, arch, 1, 0),
        op(_RET, _ERRNO | _EPERM),
        op(_LD_W_ABS, 0),  # seccomp_data.nr
        op(_JGE, _X32_BIT, 0, 1),
        op(_RET, _ERRNO | _EPERM),
        op(_JEQ, nrs["clone3"], 0, 1),
        op(_RET, _ERRNO | _ENOSYS),
    ]
    for name in ("fork", "vfork"):
        if name in nrs:
            prog += [op(_JEQ, nrs[name], 0, 1), op(_RET, _ERRNO | _EPERM)]
    prog += [
        op(_JEQ, nrs["clone"], 0, 3),
        op(_LD_W_ABS, 16),  # seccomp_data.args[0], low word: the clone flags
        op(_JSET, _CLONE_THREAD, 1, 0),
        op(_RET, _ERRNO | _EPERM),
        op(_RET, _ALLOW),
    ]
    return b"".join(prog)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_features(bwrap: str) -> set[str]:
    """The optional flags this bwrap knows (from ``bwrap --help``)."""
    proc = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    text = proc.stdout + proc.stderr
    return {flag for flag in ("--disable-userns", "--add-seccomp-fd", "--size",
                              "--unshare-cgroup-try") if flag in text}


def interpreter_binds() -> list[str]:
    """Host folders the sandboxed interpreter needs: its prefix and the virtual environment."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
             os.path.realpath(os.path.dirname(os.__file__))}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    keep = []
    for path in sorted(paths):
        if path == "/usr" or path.startswith("/usr/"):
            continue  # bound already
        if not any(path.startswith(other + "/") for other in paths if other != path):
            keep.append(path)
    return keep


def bwrap_command(
    bwrap: str,
    features: set[str],
    command: list[str],
    *,
    env: dict[str, str],
    tmpfs_bytes: int,
    seccomp_fd: int | None,
) -> list[str]:
    """``command`` wrapped in bubblewrap as the module docstring describes."""
    argv = [bwrap, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--hostname", "sandbox", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--clearenv"]
    if "--unshare-cgroup-try" in features:
        argv.append("--unshare-cgroup-try")
    if "--disable-userns" in features:
        argv.append("--disable-userns")
    for key, value in env.items():
        argv += ["--setenv", key, value]
    size = ["--size", str(tmpfs_bytes)] if "--size" in features else []
    argv += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", WORK_DIR]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in interpreter_binds():
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm",
             "--remount-ro", "/", "--chdir", WORK_DIR]
    if seccomp_fd is not None:
        flag = "--add-seccomp-fd" if "--add-seccomp-fd" in features else "--seccomp"
        argv += [flag, str(seccomp_fd)]
    return [*argv, "--", *command]


def seccomp_pipe() -> int:
    """A readable fd holding :func:`no_fork_filter` (bwrap reads it once); the caller closes it."""
    read, write = os.pipe()
    try:
        os.write(write, no_fork_filter())
    finally:
        os.close(write)
    return read


def probe_bwrap(bwrap: str, features: set[str]) -> str | None:
    """None when bwrap starts this interpreter in the full sandbox; else what went wrong."""
    fd = seccomp_pipe()
    try:
        argv = bwrap_command(bwrap, features, [sys.executable, "-I", "-B", "-c", "print('ok')"],
                             env={"PATH": SANDBOX_PATH}, tmpfs_bytes=1 << 20, seccomp_fd=fd)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, pass_fds=(fd,),
                              env={"PATH": SANDBOX_PATH}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        os.close(fd)
    if proc.returncode == 0 and proc.stdout.strip() == "ok":
        return None
    lines = (proc.stderr.strip() or f"exit {proc.returncode}").splitlines()
    return lines[-1][:300]


def require_bwrap() -> tuple[str, set[str]]:
    """bwrap's path and features, after a probe run; a one-line SpectrumKDError otherwise."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SpectrumKDError(
            "code evaluation runs model-written programs under bubblewrap, which is not "
            f"installed: {INSTALL_HINT} (or pass --allow-unsandboxed to run them without OS "
            "isolation, at your own risk)"
        )
    features = bwrap_features(bwrap)
    problem = probe_bwrap(bwrap, features)
    if problem is not None:
        raise SpectrumKDError(
            f"bubblewrap ({bwrap}) cannot start a sandbox here: {problem} (user namespaces may "
            "be disabled; or pass --allow-unsandboxed to run programs without OS isolation, "
            "at your own risk)"
        )
    return bwrap, features
