"""OS isolation for model-written programs: the bubblewrap command line and a seccomp filter.

:func:`bwrap_command` wraps one interpreter command in bubblewrap (Debian package
``bubblewrap``, <https://github.com/containers/bubblewrap>, 0.8 or newer for ``--size`` and
``--perms``): pid, network, ipc, uts and (when possible) cgroup namespaces; all capabilities
dropped; a read-only root that holds only ``/usr``, the ``/bin``/``/lib*`` links,
``/etc/ld.so.cache`` and the interpreter's own prefix (and the virtual environment, so its
packages import); no ``/sys``; a read-only ``/dev`` with the usual devices; a fresh ``/proc`` of
the new pid namespace (no host processes, so no ``/proc/<ppid>/environ``) whose kernel
interfaces (``/proc/sys``, ``/proc/sysrq-trigger``, ``/proc/irq``, ``/proc/bus``, ``/proc/fs``)
are mounted read-only; size-limited tmpfs mounts at ``/sandbox`` (the working directory),
``/tmp`` and ``/dev/shm`` that together hold at most :func:`tmpfs_budget` bytes; a cleared
environment; ``--die-with-parent`` (killing bwrap kills the namespace's pid 1, and with it every
process in the namespace, ``setsid`` children included) and ``--new-session``.

Who the program is on the host (issue 20: as root, bwrap's user namespace maps the sandbox user
to host uid 0, for which ``/proc/sys`` is writable whatever trick opens the file):

- evaluator **not root**: a user namespace maps uid/gid 65534 inside to the evaluator's own uid,
  and ``--disable-userns`` forbids further user namespaces;
- evaluator **root** (:func:`runs_as_root`): no user namespace; bwrap, as host root, sets up the
  mounts and keeps only ``CAP_SETUID``/``CAP_SETGID``, and the child
  (:mod:`spectrumkd.evaluate.sandbox_child`) drops to host uid/gid 65534 (``nobody``) and clears
  its groups before anything else runs, so the program is an unprivileged host user with no
  capabilities and ``no_new_privs``. (A user namespace cannot give that here: a namespace mapped
  to an unprivileged host uid can only be made by that uid, which cannot reach an interpreter
  under ``/root``.)

So ``/proc/sys`` is closed twice: the program's host uid is never 0, and the mount is read-only.

:func:`seccomp_filter` is a classic-BPF seccomp program loaded by bwrap for every process:

- refused with ``EPERM``: ``memfd_create``/``memfd_secret`` (anonymous files, whose pages count
  against neither ``RLIMIT_AS`` nor a tmpfs size), SysV ``shmget``/``msgget`` (the same, per ipc
  namespace), ``socket`` of every family but ``AF_INET``/``AF_INET6`` (no unix socket can be
  opened, so no filesystem or abstract socket can be reached; no netlink, no ``AF_VSOCK`` to a
  VM's host) and ``socketpair``, ``unshare``/``setns`` and clone flags that make namespaces (a new
  user namespace would bring capabilities and unbounded tmpfs mounts), ``mount``, ``fsopen``,
  ``open_tree``, ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_getfd``, ``io_uring_*``
  (its requests bypass seccomp), ``bpf``, ``userfaultfd``, ``perf_event_open``, the key
  syscalls ``add_key``/``request_key``/``keyctl`` (the host user's keyring outlives the sandbox:
  a channel from one program to the next), and every
  syscall of a foreign ABI (x32, i386 on x86-64);
- with ``allow_fork=False`` (``max_processes=1``, and always for the checker): ``fork``,
  ``vfork`` and ``clone`` without ``CLONE_THREAD`` (threads still work); ``clone3`` always gets
  ``ENOSYS``, so libc falls back to ``clone``, whose flags the filter can read.

Memory: ``RLIMIT_AS`` (set by the child) plus the tmpfs sizes, and the caller sets ``RLIMIT_AS``
to ``memory_bytes - tmpfs_budget``, so heap, mappings and files together stay below
``memory_bytes`` for one process. Where the evaluator is root and a memory cgroup can be made
(:func:`make_cgroup`: cgroup v1's memory hierarchy, or cgroup v2 where this process's cgroup
delegates the memory controller), the runner also runs in a fresh cgroup of its own, whose limit
``memory_bytes`` counts everything charged to it: anonymous memory, tmpfs and page-cache pages,
and the kernel memory it makes the kernel allocate (pipe buffers, inodes, page tables), for all
its processes together. :func:`cgroup_command` puts bwrap in it before bwrap starts (``sh``
writes its own pid to ``cgroup.procs``, then execs), so every process of the sandbox is born
inside; :func:`remove_cgroup` kills what is left in it and removes it.

What the sandbox still does NOT cover:

- without a memory cgroup (evaluator not root, no memory controller, a read-only cgroupfs):
  kernel memory the program makes the kernel hold (page tables, pipe buffers across up to
  ``RLIMIT_NOFILE`` = 256 descriptors, tmpfs inodes: many empty files cost kernel memory but no
  tmpfs bytes) is not counted, and with ``max_processes > 1`` each process has its own
  ``RLIMIT_AS``, so the total is a multiple of the cap;
- no pids cgroup: ``RLIMIT_NPROC`` (``max_processes > 1``) counts every process of the host user
  65534 when the evaluator is root (concurrent sandboxes, and any host daemon running as
  ``nobody``, share it), or of the evaluator's own user otherwise;
- the memory cgroup holds the runner only; the checker runs trusted task code under its rlimits;
- CPU time is bounded per process (``RLIMIT_CPU``) and by the deadline, but CPU, memory bandwidth
  and caches are shared with the host (timing side channels included);
- the program can read every file under the bound folders (``/usr``, the interpreter, the virtual
  environment), so a world-readable secret there is readable, and ``/proc``'s global files
  (``/proc/cpuinfo``, ``/proc/meminfo``);
- ``AF_INET``/``AF_INET6`` sockets stay allowed, inside an empty network namespace (no route);
- kernel bugs reachable through the syscalls that remain allowed;
- as root, a short window in the trusted child, before any program code runs, where the process
  is host uid 0 holding only ``CAP_SETUID``/``CAP_SETGID``; and host uid 65534 is a real user,
  shared with other sandboxes and with any host process running as ``nobody`` (they are out of
  reach through the pid namespace and the seccomp filter, not through their uid);
- bubblewrap older than 0.8 is refused rather than run with unsized tmpfs mounts.

Not here: the rlimits and the privilege drop (set by the child itself before the program runs,
see :mod:`spectrumkd.evaluate.sandbox_child`), the deadline and the output caps (the evaluator,
:mod:`spectrumkd.evaluate.code`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

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
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NAMESPACES = 0x7E020000
_AF_INET, _AF_INET6 = 2, 10
_X32_BIT = 0x40000000
_ARCHES = {  # audit arch and syscall numbers (asm/unistd_64.h, asm-generic/unistd.h)
    "x86_64": (0xC000003E, {
        "clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "socket": 41, "socketpair": 53,
        "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68, "unshare": 272,
        "setns": 308, "mount": 165, "fsopen": 430, "open_tree": 428, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 321,
        "userfaultfd": 323, "perf_event_open": 298, "add_key": 248, "request_key": 249,
        "keyctl": 250}),
    "aarch64": (0xC00000B7, {
        "clone": 220, "clone3": 435, "socket": 198, "socketpair": 199,
        "memfd_create": 279, "memfd_secret": 447, "shmget": 194, "msgget": 186, "unshare": 97,
        "setns": 268, "mount": 40, "fsopen": 430, "open_tree": 428, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_getfd": 438,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 280,
        "userfaultfd": 282, "perf_event_open": 241, "add_key": 217, "request_key": 218,
        "keyctl": 219}),
}
REFUSED = ("memfd_create", "memfd_secret", "shmget", "msgget", "socketpair", "unshare", "setns",
           "mount", "fsopen", "open_tree", "ptrace", "process_vm_readv", "process_vm_writev",
           "pidfd_getfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf",
           "userfaultfd", "perf_event_open", "add_key", "request_key", "keyctl")
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
REQUIRED_FEATURES = ("--size", "--perms")  # without them tmpfs sizes or owners are not ours


def seccomp_filter(machine: str | None = None, *, allow_fork: bool = False) -> bytes:
    """The seccomp program (``struct sock_filter[]``) described in the module docstring."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SpectrumKDError(f"no seccomp filter for CPU architecture {machine!r}")
    arch, nrs = _ARCHES[machine]

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    def refuse(nr: int, errno: int = _EPERM) -> list[bytes]:
        return [op(_JEQ, nr, 0, 1), op(_RET, _ERRNO | errno)]

    prog = [
        op(_LD_W_ABS, 4),  # seccomp_data.arch
        op(_JEQ, arch, 1, 0),
        op(_RET, _ERRNO | _EPERM),
        op(_LD_W_ABS, 0),  # seccomp_data.nr
        op(_JGE, _X32_BIT, 0, 1),
        op(_RET, _ERRNO | _EPERM),
    ]
    for name in REFUSED:
        prog += refuse(nrs[name])
    prog += refuse(nrs["clone3"], _ENOSYS)  # its flags sit in memory the filter cannot read
    if not allow_fork:
        for name in ("fork", "vfork"):
            if name in nrs:
                prog += refuse(nrs[name])
    prog += [  # socket(family, ...): only the (empty) network namespace's inet families
        op(_JEQ, nrs["socket"], 0, 5),
        op(_LD_W_ABS, 16),  # seccomp_data.args[0], low word
        op(_JEQ, _AF_INET, 2, 0),
        op(_JEQ, _AF_INET6, 1, 0),
        op(_RET, _ERRNO | _EPERM),
        op(_RET, _ALLOW),
    ]
    clone = [op(_LD_W_ABS, 16),  # the clone flags
             op(_JSET, _CLONE_NAMESPACES, 0, 1), op(_RET, _ERRNO | _EPERM)]
    if not allow_fork:
        clone += [op(_JSET, _CLONE_THREAD, 1, 0), op(_RET, _ERRNO | _EPERM)]
    clone.append(op(_RET, _ALLOW))
    prog += [op(_JEQ, nrs["clone"], 0, len(clone)), *clone, op(_RET, _ALLOW)]
    return b"".join(prog)


def runs_as_root() -> bool:
    """Whether bwrap starts as host root, so the child must drop to :data:`SANDBOX_UID` itself."""
    return os.geteuid() == 0


def tmpfs_budget(memory_bytes: int | None, max_file_bytes: int) -> int:
    """Bytes the three tmpfs mounts may hold together: 4 files' worth, at most a quarter of the
    memory cap (the caller takes them off ``RLIMIT_AS``)."""
    budget = 4 * max_file_bytes
    return budget if memory_bytes is None else min(budget, memory_bytes // 4)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_parent() -> tuple[Path, str] | None:
    """(this process's memory cgroup folder, "v1" or "v2") when children can be made in it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    for _, controllers, rel in entries:  # cgroup v1: a memory hierarchy of its own
        if "memory" in controllers.split(","):
            folder = CGROUP_ROOT / "memory" / rel.lstrip("/")
            if (folder / "memory.limit_in_bytes").is_file():
                return folder, "v1"
    for hierarchy, controllers, rel in entries:  # cgroup v2: memory delegated to our children
        if hierarchy == "0" and not controllers:
            folder = CGROUP_ROOT / rel.lstrip("/")
            try:
                delegated = (folder / "cgroup.subtree_control").read_text().split()
            except OSError:
                return None
            if "memory" in delegated:
                return folder, "v2"
    return None


def make_cgroup(memory_bytes: int | None) -> Path | None:
    """A fresh memory cgroup limited to ``memory_bytes`` (swap included), or None where this
    process cannot make one (not root, no memory controller, a read-only cgroupfs)."""
    if memory_bytes is None or not runs_as_root():
        return None
    found = _cgroup_parent()
    if found is None:
        return None
    parent, version = found
    path = parent / f"spectrumkd-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        path.mkdir()
    except OSError:
        return None  # a read-only or foreign cgroupfs: the rlimits and tmpfs sizes remain
    files = (("memory.max", "memory.swap.max") if version == "v2"
             else ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"))
    values = (memory_bytes, 0 if version == "v2" else memory_bytes)
    try:
        for name, value in zip(files, values):
            if name == files[0] or (path / name).exists():  # no swap accounting: no file
                (path / name).write_text(str(value))
    except OSError as exc:
        remove_cgroup(path)
        raise SpectrumKDError(f"cannot set the memory limit of cgroup {path}: {exc}") from None
    # a host may refuse the move itself (cgroup namespaces, v2 delegation rules): try it once,
    # so that a refused move means no cgroup, never a runner that fails to start
    trial = subprocess.run(cgroup_command(path, ["true"]), capture_output=True, timeout=30)
    if trial.returncode != 0:
        remove_cgroup(path)
        return None
    return path


def cgroup_command(path: Path, argv: list[str]) -> list[str]:
    """``argv`` started inside cgroup ``path``: ``sh`` moves itself there, then execs."""
    return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', str(path / "cgroup.procs"), *argv]


def remove_cgroup(path: Path, *, wait: float = 5.0) -> None:
    """Kill every process left in cgroup ``path``, then remove it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            pids = (path / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY while the killed processes exit
            if time.monotonic() > deadline:
                raise SpectrumKDError(f"cannot remove sandbox cgroup {path}: {exc}") from None
            time.sleep(0.02)


def child_source() -> str:
    """The text of :mod:`spectrumkd.evaluate.sandbox_child`, run as ``python -c`` in the sandbox."""
    return Path(__file__).with_name("sandbox_child.py").read_text(encoding="utf-8")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_features(bwrap: str) -> set[str]:
    """The optional flags this bwrap knows (from ``bwrap --help``)."""
    proc = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    text = proc.stdout + proc.stderr
    return {flag for flag in ("--disable-userns", "--add-seccomp-fd", "--unshare-cgroup-try",
                              *REQUIRED_FEATURES) if flag in text}


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
    """``command`` wrapped in bubblewrap as the module docstring describes.

    ``tmpfs_bytes`` is the total of the three tmpfs mounts (half for the working directory, a
    quarter each for ``/tmp`` and ``/dev/shm``). As root, ``command`` must drop to
    :data:`SANDBOX_UID` itself (the child's ``drop_to``).
    """
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv",
            "--cap-drop", "ALL"]
    if runs_as_root():
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        if "--disable-userns" in features:
            argv.append("--disable-userns")
    if "--unshare-cgroup-try" in features:
        argv.append("--unshare-cgroup-try")
    for key, value in env.items():
        argv += ["--setenv", key, value]

    def tmpfs(path: str, size: int, perms: str) -> list[str]:
        size_args = ["--size", str(max(size, 4096))] if "--size" in features else []
        perm_args = ["--perms", perms] if "--perms" in features else []
        return [*perm_args, *size_args, "--tmpfs", path]

    argv += tmpfs(WORK_DIR, tmpfs_bytes // 2, "0777") + tmpfs("/tmp", tmpfs_bytes // 4, "1777")
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    made: set[str] = set()
    for path in interpreter_binds():
        # bwrap copies the host's mode onto the folders it makes above a bind (/root: 0700),
        # which would shut the unprivileged program out of its own interpreter
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in made and "--perms" in features:
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc"]
    for path in PROC_READ_ONLY:  # the host's kernel interfaces, read-only over the fresh /proc
        argv += ["--ro-bind-try", path, path]
    # /dev read-only: in a user namespace the program owns bwrap's unsized /dev tmpfs
    argv += ["--dev", "/dev", *tmpfs("/dev/shm", tmpfs_bytes // 4, "1777"),
             "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORK_DIR]
    if seccomp_fd is not None:
        flag = "--add-seccomp-fd" if "--add-seccomp-fd" in features else "--seccomp"
        argv += [flag, str(seccomp_fd)]
    return [*argv, "--", *command]


def seccomp_pipe(*, allow_fork: bool = False) -> int:
    """A readable fd holding :func:`seccomp_filter` (bwrap reads it once); the caller closes it."""
    read, write = os.pipe()
    try:
        os.write(write, seccomp_filter(allow_fork=allow_fork))
    finally:
        os.close(write)
    return read


def probe_bwrap(bwrap: str, features: set[str]) -> str | None:
    """None when bwrap starts the child, as user 65534, in the full sandbox; else what went wrong."""
    fd = seccomp_pipe()
    config = {"drop_to": SANDBOX_UID if runs_as_root() else None}
    try:
        argv = bwrap_command(bwrap, features, [sys.executable, "-I", "-B", "-c", child_source(),
                                               "probe", json.dumps(config)],
                             env={"PATH": SANDBOX_PATH}, tmpfs_bytes=1 << 20, seccomp_fd=fd)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, pass_fds=(fd,),
                              env={"PATH": SANDBOX_PATH}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        os.close(fd)
    if proc.returncode == 0 and proc.stdout.split() == ["ok", str(SANDBOX_UID)]:
        return None
    lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()
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
    missing = [flag for flag in REQUIRED_FEATURES if flag not in features]
    if missing:
        raise SpectrumKDError(
            f"bubblewrap ({bwrap}) lacks {', '.join(missing)} (0.8 or newer has them): the "
            "sandbox's tmpfs sizes and owners cannot be set (upgrade bubblewrap, or pass "
            "--allow-unsandboxed to run programs without OS isolation, at your own risk)"
        )
    return bwrap, features
