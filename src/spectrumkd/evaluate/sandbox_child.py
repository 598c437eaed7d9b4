"""The two child processes of one code check: the untrusted *runner* and the trusted *checker*.

This file runs as source text in fresh interpreters (``python -I -B -c SOURCE runner|checker
CONFIG``), possibly inside bubblewrap where the package is not mounted, so it imports only the
standard library and nothing from ``spectrumkd``. :mod:`spectrumkd.evaluate.code` starts both
processes and joins them with two pipes.

- The **runner** holds the candidate's program. It closes every descriptor but its pipes and
  stdio, sets its rlimits, drops to the unprivileged ``drop_to`` user when it starts as root
  (and checks that root cannot be regained), optionally installs an audit hook (a second layer;
  the OS sandbox is the boundary), then serves requests on the pipe:
  ``load`` executes the program, ``call`` calls one of its functions with JSON-decoded arguments
  and answers with the JSON-encoded return value or the exception's type name and message.
- The **checker** holds the task's own code (HumanEval ``prompt`` helpers and ``test``, or
  MBPP's asserts). It binds each function the tests call to a :class:`Proxy` that forwards the
  call to the runner, runs the tests, and writes the verdict on its own stdout, which only the
  evaluator reads. The runner can answer only with plain values (None, bool, int, float, str,
  bytes, complex, and lists, tuples, dicts, sets of them), decoded strictly here, so objects with
  a rigged ``__eq__``, rebound builtins, stolen tokens, printed text and exit statuses never
  reach the verdict. A broken reply, an unsendable value, a missing function or a dead runner
  marks the check broken for good (a ``BaseException``, so ``except Exception`` in a test cannot
  swallow it, and the flag is checked again at the end).

- The **probe** (``require_bwrap``'s test run) drops privileges like the others and prints
  ``ok UID``.

Wire format: one JSON document per line, at most ``MAX_LINE`` bytes; tuples, dicts, sets and
bytes travel as ``{"t": TAG, "v": ...}`` so they come back as the same types.
"""

import builtins
import json
import os
import sys
import traceback

MAX_LINE = 16 << 20  # bytes per message: a larger reply is a broken check, not a memory blow-up
MAX_DEPTH = 200  # nesting of one value
MAX_OPEN_FILES = 256  # RLIMIT_NOFILE: also bounds the pipe buffers a program can fill
TAGS = ("tuple", "list", "dict", "set", "frozenset", "bytes", "complex")


class Unsendable(Exception):
    """A value outside the plain types (or nested too deep) cannot cross the pipe."""


def encode(value, depth=0):
    """A JSON-ready form of a plain value; raises :class:`Unsendable` for anything else."""
    if depth > MAX_DEPTH:
        raise Unsendable("value nested too deep")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind in (tuple, set, frozenset):
        return {"t": kind.__name__, "v": [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"t": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)]
                                   for k, v in value.items()]}
    if kind in (bytes, bytearray):
        return {"t": "bytes", "v": bytes(value).hex()}
    if kind is complex:
        return {"t": "complex", "v": [value.real, value.imag]}
    for plain in (bool, int, float, str, list, tuple, dict, set, frozenset, bytes, complex):
        if isinstance(value, plain):  # a subclass (IntEnum, namedtuple, ...): its plain value
            return encode(plain(value), depth + 1)
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        return encode(value.item(), depth + 1)  # a numpy scalar
    raise Unsendable(f"cannot send a {kind.__name__} (only plain values cross the pipe)")


def decode(data, depth=0):
    """The plain value of :func:`encode`'s form; strict: anything else raises ``ValueError``."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deep")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(item, depth + 1) for item in data]
    if kind is not dict or set(data) != {"t", "v"} or data["t"] not in TAGS:
        raise ValueError(f"not a plain value: {str(data)[:80]}")
    tag, body = data["t"], data["v"]
    if tag == "bytes":
        return bytes.fromhex(body)
    if tag == "complex":
        real, imag = body
        return complex(float(real), float(imag))
    if type(body) is not list:
        raise ValueError(f"malformed {tag}")
    if tag == "dict":
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
    items = [decode(item, depth + 1) for item in body]
    return {"tuple": tuple, "list": list, "set": set, "frozenset": frozenset}[tag](items)


def send(handle, message):
    handle.write(json.dumps(message, allow_nan=True).encode() + b"\n")
    handle.flush()


def receive(handle):
    """The next message; raises ``EOFError`` at the end and ``ValueError`` on garbage."""
    line = handle.readline(MAX_LINE + 1)
    if not line:
        raise EOFError("the other side closed the pipe")
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise ValueError(f"message over {MAX_LINE} bytes or cut short")
    message = json.loads(line)
    if type(message) is not dict:
        raise ValueError("message is not an object")
    return message


def set_limits(config):
    import resource

    limits = [(resource.RLIMIT_CPU, config["cpu_seconds"]),
              (resource.RLIMIT_FSIZE, config["max_file_bytes"]),
              (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
              (resource.RLIMIT_MSGQUEUE, 0)]
    if config["max_processes"] is not None:
        limits.append((resource.RLIMIT_NPROC, config["max_processes"]))
    if config["memory_bytes"]:
        limits.append((resource.RLIMIT_AS, config["memory_bytes"]))
    for kind, value in limits:
        resource.setrlimit(kind, (value, value))


def drop_privileges(config):
    """Become user and group ``drop_to`` (from root), with no supplementary groups, for good."""
    uid = config.get("drop_to")
    if uid is None:
        return
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if {os.getuid(), os.geteuid(), os.getgid(), os.getegid()} != {uid} or os.getgroups():
        raise SystemExit(f"sandbox: could not become user {uid}")
    try:
        os.setuid(0)
    except OSError:
        return
    raise SystemExit("sandbox: root could be regained after dropping privileges")


def close_other_fds(keep):
    """Close every descriptor but ``keep`` (bwrap's and the evaluator's leftovers included)."""
    low = 0
    for fd in [*sorted(set(keep)), max(os.sysconf("SC_OPEN_MAX"), max(keep) + 1)]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def audit_hook(root):
    """A Python-level second layer: refuse processes, sockets, ctypes and writes outside root."""
    blocked = frozenset({
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind",
        "socket.getaddrinfo", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
        "sys.addaudithook", "os.chdir", "os.mkfifo", "os.mknod", "sqlite3.connect"})
    path_events = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2,
                   "os.replace": 2, "os.link": 2, "os.symlink": 2, "os.chmod": 1, "os.chown": 1,
                   "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1, "shutil.copyfile": 2,
                   "shutil.move": 2}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    realpath, join, fsdecode, sep = os.path.realpath, os.path.join, os.fsdecode, os.sep

    def inside(path):
        if isinstance(path, int):
            return False  # an fd (or dir_fd-relative call) may point anywhere
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

    return hook


def error_reply(exc):
    return {"ok": False, "type": type(exc).__name__, "error": str(exc)[:2000],
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


def runner(config):
    """Serve ``load`` and ``call`` requests for the candidate's program (untrusted side)."""
    requests = os.fdopen(config["rpc_in"], "rb")
    replies = os.fdopen(config["rpc_out"], "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the program reads nothing
    os.close(null)
    close_other_fds([0, 1, 2, config["rpc_in"], config["rpc_out"]])
    set_limits(config)
    drop_privileges(config)
    os.chdir(config["work"])
    os.environ.pop("PWD", None)  # bwrap's; the program sees only the evaluator's short list
    if config["audit_hook"]:
        sys.addaudithook(audit_hook(os.path.realpath(config["work"])))
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    while True:
        try:
            request = receive(requests)
        except EOFError:
            return
        if request.get("op") == "load":
            try:
                code = compile(request["source"], "program.py", "exec")
                exec(code, namespace)
            except BaseException as exc:  # the program's own failure, reported as such
                traceback.print_exc()
                reply = error_reply(exc)
            else:
                reply = {"ok": True}
        elif request.get("op") == "call":
            function = namespace.get(request["name"])
            if not callable(function):
                reply = {"ok": False, "missing": True, "type": "NameError",
                         "error": f"the program defines no function {request['name']!r}"}
            else:
                try:
                    value = function(*decode(request["args"]), **decode(request["kwargs"]))
                    reply = {"ok": True, "value": encode(value)}
                except Unsendable as exc:
                    reply = {"ok": False, "unsendable": True, "type": "TypeError",
                             "error": str(exc)}
                except BaseException as exc:
                    reply = error_reply(exc)
        else:
            reply = {"ok": False, "type": "ValueError", "error": "unknown request"}
        send(replies, reply)


class CandidateGone(BaseException):
    """The runner died, sent garbage or an unsendable value: the check is broken, not failed."""


class Channel:
    def __init__(self, requests, replies):
        self.requests, self.replies = requests, replies
        self.broken = None
        self.calls = 0

    def ask(self, message):
        if self.broken:
            raise CandidateGone(self.broken)
        try:
            send(self.requests, message)
            reply = receive(self.replies)
            if type(reply.get("ok")) is not bool:
                raise ValueError("reply without a boolean 'ok'")
        except (OSError, EOFError, ValueError, RecursionError, MemoryError) as exc:
            self.broken = f"runner gone or garbled: {type(exc).__name__}: {exc}"
            raise CandidateGone(self.broken) from None
        return reply


def exception_for(reply):
    """The candidate's exception, re-raised here as a builtin type when it is one."""
    name, message = str(reply.get("type")), str(reply.get("error"))
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except Exception:  # a builtin with a different constructor (UnicodeDecodeError, ...)
            pass
    return RuntimeError(f"{name}: {message}")


class Proxy:
    """Stands for one of the candidate's functions inside the trusted tests."""

    def __init__(self, channel, name):
        self.channel, self.name = channel, name

    def __call__(self, *args, **kwargs):
        channel = self.channel
        try:
            message = {"op": "call", "name": self.name, "args": encode(list(args)),
                       "kwargs": encode(dict(kwargs))}
        except Unsendable as exc:
            channel.broken = f"the test passes a value that cannot be sent: {exc}"
            raise CandidateGone(channel.broken) from None
        reply = channel.ask(message)
        if reply["ok"]:
            try:
                value = decode(reply.get("value"))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                channel.broken = f"{self.name} returned a value that is not plain: {exc}"
                raise CandidateGone(channel.broken) from None
            channel.calls += 1
            return value
        if reply.get("missing") or reply.get("unsendable"):
            channel.broken = f"{self.name}: {reply.get('error')}"
            raise CandidateGone(channel.broken)
        channel.calls += 1
        raise exception_for(reply)

    def __repr__(self):
        return f"<candidate {self.name}>"


def checker(config):
    """Run the task's tests against proxies of the candidate; write the verdict (trusted side)."""
    verdict_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the tests print goes to stderr, never next to the verdict
    job = json.loads(sys.stdin.read())
    set_limits(config)
    drop_privileges(config)
    channel = Channel(os.fdopen(config["rpc_out"], "wb"), os.fdopen(config["rpc_in"], "rb"))

    def verdict(passed, reason):
        verdict_out.write(json.dumps({"passed": passed, "reason": reason[-4000:]}) + "\n")
        verdict_out.flush()

    try:
        loaded = channel.ask({"op": "load", "source": job["source"]})
    except CandidateGone as exc:
        return verdict(False, f"program did not load: {exc}")
    if not loaded["ok"]:
        return verdict(False, f"program raised {loaded.get('type')}: {loaded.get('error')}\n"
                              f"{loaded.get('traceback', '')}")
    if job.get("call") is None:
        return verdict(True, "ran to the end (no tests: not a trusted verdict)")
    namespace = {"__name__": "__check__", "__builtins__": builtins}
    try:
        for module in job.get("modules", []):
            namespace[module] = __import__(module)
        exec(compile(job.get("prelude", ""), "task_prelude.py", "exec"), namespace)
        exec(compile(job.get("test", ""), "task_test.py", "exec"), namespace)
        for name in job["names"]:
            namespace[name] = Proxy(channel, name)
        exec(compile(job["call"], "task_call.py", "exec"), namespace)
    except CandidateGone as exc:
        return verdict(False, f"broken: {exc}")
    except Exception:
        return verdict(False, "test failed:\n" + traceback.format_exc())
    if channel.broken:  # a test swallowed the CandidateGone with a bare except
        return verdict(False, f"broken: {channel.broken}")
    if channel.calls == 0:
        return verdict(False, "the tests never called the candidate")
    return verdict(True, f"passed ({channel.calls} calls)")


def probe(config):
    """The sandbox works: this process runs, unprivileged, and can say so."""
    drop_privileges(config)
    print("ok", os.getuid())


def main():
    role, config = sys.argv[1], json.loads(sys.argv[2])
    {"runner": runner, "checker": checker, "probe": probe}[role](config)


if __name__ == "__main__":
    main()
