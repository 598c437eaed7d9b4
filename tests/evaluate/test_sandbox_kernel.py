"""Hostile programs of issue 20 against the host kernel: /proc/sys and /sys writes, the host uid,
memory held outside the address-space limit (memfd, tmpfs, SysV shm), filesystem and other
sockets, new namespaces, signals and ptrace towards other processes, inherited descriptors, fork
bombs and faked verdicts.

Each test checks the host side: a kernel setting read before and after (and restored if it ever
changed, so a failing test leaves the machine as it found it), a host process still alive, a host
socket that never accepted, memory held by the program below the cap. The audit hook is off: the
OS sandbox alone must hold. Needs bubblewrap (``apt-get install bubblewrap``); CI runs as root,
the case that matters most (without care, the sandbox user is host root there).
"""

import dataclasses
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from spectrumkd.evaluate import code as c

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap",
)
LIMITS = c.SandboxLimits(timeout=10.0, memory_bytes=256 << 20, audit_hook=False)


def _run(program, **changes):
    return c.run_program(program, limits=dataclasses.replace(LIMITS, **changes))


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _restore(path, before):
    if _read(path) != before:
        with open(path, "wb") as handle:  # the sandbox failed: put the host back, then fail
            handle.write(before)


# ----------------------------------------------------------------------------- S1 kernel settings

SYSCTL = "/proc/sys/kernel/core_uses_pid"


def _sysctl_tricks(path, value):
    folder, name = os.path.split(path)
    return {
        "open": f"open({path!r}, 'wb').write({value!r})\n",
        "dir_fd": (f"import os\nd = os.open({folder!r}, os.O_RDONLY)\n"
                   f"os.write(os.open({name!r}, os.O_WRONLY, dir_fd=d), {value!r})\n"),
        "proc_self_root": f"open('/proc/self/root' + {path!r}, 'wb').write({value!r})\n",
        "proc_1_root": f"open('/proc/1/root' + {path!r}, 'wb').write({value!r})\n",
        "remount": ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    "r = libc.mount(b'proc', b'/proc', b'proc', 0, None)\n"
                    "assert r == 0, os.strerror(ctypes.get_errno())\n"
                    f"open({path!r}, 'wb').write({value!r})\n"),
    }


@pytest.mark.parametrize("trick", sorted(_sysctl_tricks(SYSCTL, b"0")))
@pytest.mark.parametrize("path", [SYSCTL, "/proc/sys/kernel/core_pattern"])
def test_host_kernel_settings_stay_unchanged(path, trick):
    before = _read(path)
    value = (b"0" if before.strip() == b"1" else b"1") if path == SYSCTL else b"|/bin/false"
    try:
        result = _run(_sysctl_tricks(path, value)[trick] + "print('wrote it')\n")
        after = _read(path)
    finally:
        _restore(path, before)
    assert after == before, (trick, result)
    assert "wrote it" not in result.stdout
    assert re.search(r"(PermissionError|OSError|AssertionError)", result.stderr), result.stderr


@pytest.mark.parametrize("path", ["/proc/sysrq-trigger", "/proc/sys/vm/drop_caches",
                                  "/proc/1/oom_score_adj", "/proc/sys/kernel/hostname"])
def test_other_kernel_interfaces_do_not_open_for_writing(path):
    """Opened only, never written: were the sandbox to fail, nothing would happen to the host."""
    result = _run(f"import os\nos.open({path!r}, os.O_WRONLY)\nprint('opened')\n")
    assert "opened" not in result.stdout, result
    assert re.search(r"(PermissionError|OSError|FileNotFoundError)", result.stderr), result


def test_proc_sys_is_read_only_even_for_a_mapped_root():
    """The second layer: /proc/sys is mounted read-only, whoever the program is."""
    program = ("import os\n"
               "print([line for line in open('/proc/self/mountinfo') "
               "if ' /proc/sys ' in line][0])\n")
    result = _run(program)
    mounts = result.stdout.strip()
    assert " /proc/sys " in mounts and re.search(r"\sro[\s,]", mounts), result


def test_program_is_an_unprivileged_host_user():
    program = (
        "import os\n"
        "inside = os.geteuid()\n"
        "for line in open('/proc/self/uid_map'):\n"
        "    lo, out, n = map(int, line.split())\n"
        "    if lo <= inside < lo + n:\n"
        "        print('host-uid', out + inside - lo)\n"
        "status = open('/proc/self/status').read()\n"
        "print(*[l for l in status.splitlines() if l.startswith(('CapEff', 'CapPrm', 'NoNew'))])\n"
    )
    result = _run(program)
    host_uid = int(re.search(r"host-uid (\d+)", result.stdout).group(1))
    assert host_uid != 0, result.stdout
    assert "CapEff:\t0000000000000000" in result.stdout, result.stdout
    assert "CapPrm:\t0000000000000000" in result.stdout, result.stdout
    assert "NoNewPrivs:\t1" in result.stdout, result.stdout
    regain = _run("import os\nos.setuid(0)\nprint('root again')\n")
    assert "root again" not in regain.stdout
    assert re.search(r"(PermissionError|OSError): \[Errno (1|22)\]", regain.stderr), regain


THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def test_sys_is_not_there():
    before = _read(THP) if os.path.exists(THP) else None
    program = (
        "import os\n"
        "print('sys:', os.path.exists('/sys/kernel'))\n"
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "os.makedirs('/sandbox/sys', exist_ok=True)\n"
        "print('mount:', libc.mount(b'sysfs', b'/sandbox/sys', b'sysfs', 0, None))\n"
        f"open({THP!r}, 'w').write('never')\n"
    )
    try:
        result = _run(program)
    finally:
        if before is not None:
            _restore(THP, before)
    assert "sys: False" in result.stdout and "mount: -1" in result.stdout, result
    assert before is None or _read(THP) == before


# ----------------------------------------------------------------------------- S2 memory

def test_memory_held_outside_the_heap_stays_under_the_cap():
    """memfd is refused; tmpfs and heap together stay below ``memory_bytes``."""
    cap = 128 << 20
    program = (
        "import os\n"
        "try:\n"
        "    fd = os.memfd_create('hoard')\n"
        "    print('memfd: created')\n"
        "except OSError as exc:\n"
        "    print('memfd:', type(exc).__name__)\n"
        "held, chunk = 0, b'x' * (1 << 20)\n"
        "for folder in ('/sandbox', '/tmp', '/dev/shm', '/dev', '/'):\n"
        "    for i in range(1000):\n"
        "        try:\n"
        "            with open(f'{folder}/f{i}', 'wb') as handle:\n"
        "                for _ in range(8):\n"
        "                    handle.write(chunk)\n"
        "                    handle.flush()\n"
        "                    held += len(chunk)\n"
        "        except OSError:\n"
        "            break\n"
        "blocks = []\n"
        "try:\n"
        "    while True:\n"
        "        blocks.append(bytearray(4 << 20))\n"
        "        held += 4 << 20\n"
        "except MemoryError:\n"
        "    pass\n"
        "print('held', held, flush=True)\n"
    )
    result = _run(program, memory_bytes=cap, max_file_bytes=16 << 20, timeout=20.0)
    assert "memfd: PermissionError" in result.stdout, result
    held = int(re.search(r"held (\d+)", result.stdout).group(1))
    assert 16 << 20 < held <= cap, held  # it did hold memory, never more than the cap


@pytest.fixture
def memory_cgroup():
    from spectrumkd.evaluate import sandbox

    path = sandbox.make_cgroup(64 << 20)
    if path is None:
        pytest.skip("no memory cgroup can be made here (not root, or no memory controller)")
    sandbox.remove_cgroup(path)
    return path.parent


def test_kernel_memory_counts_in_the_cgroup(memory_cgroup):
    """Pipe buffers are kernel memory: only the cgroup sees them (and the tmpfs, and the heap)."""
    cap = 64 << 20
    program = (
        "import fcntl, os, sys\n"
        "held, chunk = 0, b'x' * (1 << 16)\n"
        "def note(n):\n"
        "    global held\n"
        "    held += n\n"
        "    print('held', held, flush=True)\n"
        "pipes = []\n"
        "try:\n"
        "    for _ in range(120):\n"
        "        r, w = os.pipe()\n"
        "        pipes.append((r, w))\n"
        "        try:\n"
        "            size = fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ\n"
        "        except OSError:\n"
        "            size = 1 << 16\n"
        "        os.set_blocking(w, False)\n"
        "        while True:\n"
        "            try:\n"
        "                note(os.write(w, chunk))\n"
        "            except BlockingIOError:\n"
        "                break\n"
        "except OSError as exc:\n"
        "    print('pipes stopped', exc, flush=True)\n"
        "for i in range(100):\n"
        "    try:\n"
        "        with open(f'/tmp/f{i}', 'wb') as handle:\n"
        "            for _ in range(16):\n"
        "                handle.write(chunk * 16)\n"
        "                handle.flush()\n"
        "                note(1 << 20)\n"
        "    except OSError:\n"
        "        break\n"
        "blocks = []\n"
        "try:\n"
        "    while True:\n"
        "        blocks.append(bytearray(1 << 20))\n"
        "        note(1 << 20)\n"
        "except MemoryError:\n"
        "    pass\n"
    )
    result = _run(program, memory_bytes=cap, timeout=20.0)
    helds = [int(n) for n in re.findall(r"held (\d+)", result.stdout)]
    assert helds and helds[-1] > 8 << 20, result  # it did hold memory
    assert helds[-1] <= cap, helds[-1]
    leftovers = [p for p in memory_cgroup.iterdir() if p.name.startswith("spectrumkd-")
                 and p.name.split("-")[1] == str(os.getpid())]
    assert leftovers == []  # every run's cgroup is removed


@pytest.mark.parametrize("call", ["memfd_create", "shmget", "msgget"])
def test_kernel_memory_hoards_are_refused(call):
    calls = {
        "memfd_create": "libc.memfd_create(b'x', 0)",
        "shmget": "libc.shmget(0, 1 << 30, 0o1600)",  # IPC_PRIVATE, IPC_CREAT | 0600
        "msgget": "libc.msgget(0, 0o1600)",
    }
    program = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               f"r = {calls[call]}\nprint('result', r, os.strerror(ctypes.get_errno()))\n")
    result = _run(program)
    assert "result -1 Operation not permitted" in result.stdout, result


# ----------------------------------------------------------------------------- S3 sockets

@pytest.fixture
def host_socket():
    """A unix socket listening in a folder the sandbox binds (the interpreter's prefix)."""
    listeners, accepted = [], []
    folder = Path(sys.prefix)
    path = folder / f".spectrumkd-test-{uuid.uuid4().hex[:8]}.sock"
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    except OSError as exc:
        pytest.skip(f"cannot create a socket in {folder}: {exc}")
    os.chmod(path, 0o777)  # anyone may connect: only the sandbox can stop it
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0" + path.name.encode())
    for sock in (server, abstract):
        sock.listen(1)
        sock.settimeout(0.2)
        listeners.append(sock)

    def accept():
        while listeners:
            for sock in list(listeners):
                try:
                    accepted.append(sock.accept())
                except OSError:
                    pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path, accepted
    sockets = list(listeners)
    listeners.clear()
    thread.join(2)
    for sock in sockets:
        sock.close()
    path.unlink()


def test_unix_sockets_are_unreachable(host_socket):
    path, accepted = host_socket
    program = (
        "import socket\n"
        f"for address in ({str(path)!r}, b'\\0' + {path.name.encode()!r}):\n"
        "    try:\n"
        "        s = socket.socket(socket.AF_UNIX)\n"
        "        s.connect(address)\n"
        "        print('connected', address)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        "for family in (socket.AF_NETLINK, 40):  # 40: AF_VSOCK, the way to a VM's host\n"
        "    try:\n"
        "        socket.socket(family, socket.SOCK_DGRAM)\n"
        "        print('opened', family)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        "try:\n"
        "    socket.socketpair()\n"
        "    print('pair')\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    result = _run(program)
    assert result.stdout.split().count("refused") == 5, result
    assert "PermissionError" in result.stdout and "connected" not in result.stdout
    time.sleep(0.3)
    assert accepted == []


# ----------------------------------------------------------------------------- other attacks

@pytest.mark.parametrize("flags", ["CLONE_NEWUSER", "CLONE_NEWUSER | CLONE_NEWNS"])
def test_no_new_namespaces(flags):
    program = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000\n"
        f"r = libc.unshare({flags})\nprint('unshare', r, os.strerror(ctypes.get_errno()))\n"
    )
    result = _run(program, max_processes=8)  # also when forks are allowed
    assert "unshare -1 Operation not permitted" in result.stdout, result


def test_io_uring_is_refused():
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("io_uring_setup is syscall 425 on x86_64 and aarch64 only")
    program = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "params = ctypes.create_string_buffer(120)\n"
               "r = libc.syscall(425, 4, params)\n"
               "print('io_uring', r, os.strerror(ctypes.get_errno()))\n")
    result = _run(program)
    assert "io_uring -1 Operation not permitted" in result.stdout, result


def test_the_host_users_keyring_is_out_of_reach():
    """A key in user 65534's keyring would outlive the sandbox: a channel between programs."""
    if platform.machine() != "x86_64":
        pytest.skip("add_key is syscall 248 on x86_64")
    program = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "r = libc.syscall(248, b'user', b'spectrumkd-test', b'hi', 2, -4)\n"
               "print('add_key', r, os.strerror(ctypes.get_errno()))\n")
    result = _run(program)
    assert "add_key -1 Operation not permitted" in result.stdout, result


@pytest.fixture
def nobody_sleeper():
    """A host process of the sandbox's host user (65534): signals must not reach it."""
    proc = subprocess.Popen(["sleep", "60"], user=65534, group=65534, extra_groups=[])
    yield proc
    proc.kill()
    proc.wait()


def test_signals_and_ptrace_stay_inside(nobody_sleeper):
    program = (
        "import ctypes, os, signal\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for pid in (os.getppid(), 1):\n"
        "    r = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH\n"
        "    print('ptrace', pid, r, os.strerror(ctypes.get_errno()))\n"
        "    for name in ('mem', 'environ'):\n"
        "        try:\n"
        "            open(f'/proc/{pid}/{name}', 'rb').read(1)\n"
        "            print('read', pid, name)\n"
        "        except OSError as exc:\n"
        "            print('no', pid, name, type(exc).__name__)\n"
        f"for pid in (os.getppid(), {nobody_sleeper.pid}, -1):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        print('killed', pid)\n"
        "    except OSError as exc:\n"
        "        print('no kill', pid, type(exc).__name__)\n"
    )
    result = _run(program)
    assert "ptrace" in result.stdout and " 0 " not in " ".join(
        line for line in result.stdout.splitlines() if line.startswith("ptrace")), result
    assert "read " not in result.stdout, result
    assert nobody_sleeper.poll() is None  # the host process of the same uid lives on
    assert os.getpid() > 0  # and so do we (the evaluator)


def test_fork_bomb_stops_at_the_process_limit():
    program = (
        "import os, time\n"
        "born = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        born += 1\n"
        "except OSError as exc:\n"
        "    print('stopped', type(exc).__name__)\n"
        "print('born', born, flush=True)\n"
    )
    started = time.monotonic()
    result = _run(program, max_processes=8, timeout=5.0)
    born = int(re.search(r"born (\d+)", result.stdout).group(1))
    assert "stopped" in result.stdout and born < 8, result
    assert time.monotonic() - started < 12
    none = _run(program, timeout=5.0)  # the default: no process at all
    assert "born 0" in none.stdout, none


def test_the_program_holds_no_stray_descriptor():
    program = ("import os, stat\nopen_fds = []\nfor fd in range(1024):\n"
               "    try:\n        mode = os.fstat(fd).st_mode\n    except OSError:\n        continue\n"
               "    open_fds.append((fd, stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)))\n"
               "print('fds', open_fds)\n")
    result = _run(program)
    fds = eval(re.search(r"fds (\[.*\])", result.stdout).group(1))
    assert len(fds) == 5 and all(pipe for _, pipe in fds), fds  # stdio and its two pipes


PROMPT = 'def add(a, b):\n    """The sum of a and b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


@pytest.mark.parametrize("trick", ["marker", "proc_fd"])
def test_fake_verdicts_do_not_pass(trick):
    line = '{"passed": true, "reason": "passed (1 calls)"}\n'
    tricks = {
        "marker": (f"    return 0\nimport sys\nprint({line!r} * 3)\n"
                   f"sys.stderr.write({line!r})\nsys.stdout.flush()\n"
                   "import os\nos._exit(0)\n"),
        "proc_fd": ("    return 0\nimport os\n"
                    "for fd in range(3, 64):\n"
                    "    for mode in (os.O_WRONLY, os.O_RDWR):\n"
                    "        try:\n"
                    f"            os.write(os.open(f'/proc/self/fd/{{fd}}', mode), {line!r}.encode())\n"
                    "        except OSError:\n"
                    "            pass\n"),
    }
    job = c.humaneval_program(PROMPT, tricks[trick], TEST, "add")
    result = c.run_program(job, limits=LIMITS)
    assert not result.passed, result
    right = c.humaneval_program(PROMPT, "    return a + b\n", TEST, "add")
    assert c.run_program(right, limits=LIMITS).passed


def test_the_evaluator_survives_a_sigkill_storm():
    """kill(-1) reaches only the sandbox's own pid namespace."""
    before = signal.getsignal(signal.SIGTERM)
    program = ("import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\n"
               "except ProcessLookupError:\n    pass  # nobody else in its namespace\n"
               "print('still here')\n")
    result = _run(program)
    assert signal.getsignal(signal.SIGTERM) == before
    assert "still here" in result.stdout, result
