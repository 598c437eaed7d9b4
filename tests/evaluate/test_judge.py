"""The judge client against a real HTTP server on 127.0.0.1: canned verdicts, both orders, ties
counted half, a down endpoint and malformed verdicts (clear error after retries, cache kept);
hostile endpoints (a redirect to another host, trickling replies, malformed JSON) and malformed
verdict-cache lines give one-line errors, never a traceback, and never leak the API key."""

import json
import socket
import threading
import time
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate.judge import (
    JUDGE_SYSTEM,
    JudgeClient,
    JudgeConfig,
    parse_verdict,
    winning_rate,
)


class Judge:
    """Canned judge: prefers the answer containing 'good'; ties when both or neither do."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.requests = []

    def reply(self, body):
        self.requests.append(body)
        if self.mode == "malformed":
            return 200, {"choices": [{"message": {"content": "I cannot decide."}}]}
        if self.mode == "flaky" and len(self.requests) % 2 == 1:
            return 503, {"error": "busy"}
        user = body["messages"][1]["content"]
        a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
        verdict = "C" if ("good" in a) == ("good" in b) else ("A" if "good" in a else "B")
        return 200, {"choices": [{"message": {"content": f"Explanation. [[{verdict}]]"}}]}


@pytest.fixture
def server():
    judges = []

    def start(mode="ok"):
        judge = Judge(mode)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions"
                assert self.headers["Authorization"] == "Bearer test-key"
                status, payload = judge.reply(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        judges.append(httpd)
        return judge, f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in judges:
        httpd.shutdown()
        httpd.server_close()


def _config(url, **kw):
    return JudgeConfig(base_url=url, model="judge-model", api_key="test-key", backoff=0.0, **kw)


def test_winning_rate_both_orders_and_ties(server, tmp_path):
    judge, url = server()
    client = JudgeClient(_config(url), cache_path=tmp_path / "verdicts.jsonl")
    questions = ["q1", "q2", "q3", "q4"]
    ours = ["a good answer", "meh", "good", "meh"]
    theirs = ["meh", "a good one", "good too", "meh too"]
    result = winning_rate(client, questions, ours, theirs)
    # q1 win twice, q2 loss twice, q3 and q4 ties twice: (2 + 0.5 * 4) / 8
    assert (result.wins, result.ties, result.losses) == (2, 4, 2)
    assert result.rate == pytest.approx(50.0)
    assert result.per_example == [100.0, 0.0, 50.0, 50.0]
    assert len(judge.requests) == 8
    first = judge.requests[0]
    assert first["model"] == "judge-model" and first["temperature"] == 0.7
    assert first["messages"][0]["content"] == JUDGE_SYSTEM
    assert "[The Start of Assistant A's Answer]\na good answer" in first["messages"][1]["content"]
    assert "[The Start of Assistant A's Answer]\nmeh" in judge.requests[1]["messages"][1]["content"]
    # a second run is served from the on-disk cache
    again = winning_rate(JudgeClient(_config(url), cache_path=tmp_path / "verdicts.jsonl"),
                         questions, ours, theirs)
    assert again.rate == result.rate and len(judge.requests) == 8


def test_retries_transient_errors(server):
    judge, url = server("flaky")
    client = JudgeClient(_config(url, max_retries=3))
    assert client.verdict("q", "good", "bad") == "A"
    assert len(judge.requests) == 2  # a 503, then the verdict


def test_down_endpoint_gives_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    slept = []
    client = JudgeClient(_config(f"http://127.0.0.1:{port}/v1", max_retries=2),
                         cache_path=tmp_path / "c.jsonl", sleep=slept.append)
    with pytest.raises(SpectrumKDError, match=r"failed after 3 tries"):
        client.verdict("q", "a", "b")
    assert client.requests == 3 and slept == [0.0, 0.0]


def test_backoff_doubles():
    slept = []
    client = JudgeClient(JudgeConfig(base_url="http://127.0.0.1:9/v1", model="m", backoff=0.5,
                                     max_retries=3, timeout=1), sleep=slept.append)
    with pytest.raises(SpectrumKDError):
        client.verdict("q", "a", "b")
    assert slept == [0.5, 1.0, 2.0]


def test_malformed_verdicts_keep_cache(server, tmp_path):
    judge, url = server()
    cache = tmp_path / "verdicts.jsonl"
    winning_rate(JudgeClient(_config(url), cache_path=cache), ["q1"], ["good"], ["bad"])
    assert len(cache.read_text().splitlines()) == 2
    bad, bad_url = server("malformed")
    client = JudgeClient(_config(bad_url, max_retries=2), cache_path=cache)
    with pytest.raises(SpectrumKDError, match="malformed verdict"):
        winning_rate(client, ["q1", "q2"], ["good", "x"], ["bad", "y"])
    assert len(bad.requests) == 3  # q1 came from the cache; q2 tried 3 times
    assert len(cache.read_text().splitlines()) == 2  # the cached verdicts are kept


def test_parse_verdict_and_config(monkeypatch):
    assert parse_verdict("[[A]] or [[B]]") is None
    monkeypatch.delenv("SPECTRUMKD_JUDGE_BASE_URL", raising=False)
    with pytest.raises(SpectrumKDError, match="SPECTRUMKD_JUDGE_BASE_URL"):
        JudgeConfig.from_env()
    monkeypatch.setenv("SPECTRUMKD_JUDGE_BASE_URL", "http://x/v1")
    monkeypatch.setenv("SPECTRUMKD_JUDGE_MODEL", "deepseek-chat")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    config = JudgeConfig.from_env()
    assert (config.model, config.api_key) == ("deepseek-chat", "k")


# ----------------------------------------------------------------------------- hostile endpoints


class Recorder(BaseHTTPRequestHandler):
    """A second host: records every request it gets and answers each with a verdict."""

    seen: typing.ClassVar[list] = []

    def _answer(self):
        type(self).seen.append((self.command, self.headers.get("Authorization")))
        data = json.dumps({"choices": [{"message": {"content": "[[A]]"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def _serve(handler):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def raw_server():
    """A server whose handler writes raw bytes: ``start(fn)`` where ``fn(handler)`` replies."""
    servers = []

    def start(reply):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                reply(self)

            def log_message(self, *args):
                pass

        httpd, url = _serve(Handler)
        servers.append(httpd)
        return url + "/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _json_reply(payload, status=200):
    def reply(handler):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def test_redirect_is_refused_and_the_key_stays_home(raw_server):
    Recorder.seen = []
    other, other_url = _serve(Recorder)
    try:
        def redirect(handler):
            handler.send_response(302)
            handler.send_header("Location", other_url + "/v1/chat/completions")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        url = raw_server(redirect)
        client = JudgeClient(_config(url, max_retries=3))
        with pytest.raises(SpectrumKDError, match="redirect") as info:
            client.verdict("q", "a", "b")
        assert "\n" not in str(info.value)
        assert Recorder.seen == []  # the other host never heard of us, let alone the key
        assert client.requests == 1  # a redirect is not retried
    finally:
        other.shutdown()
        other.server_close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_trickling_reply_cannot_outlast_the_timeout(raw_server, where):
    body = json.dumps({"choices": [{"message": {"content": "[[A]]"}}]}).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\n\r\n").encode()

    def trickle(handler):
        slow, fast = (head, b"") if where == "headers" else (body, head)
        handler.wfile.write(fast)
        handler.wfile.flush()
        for i in range(len(slow)):
            handler.wfile.write(slow[i: i + 1])
            handler.wfile.flush()
            time.sleep(0.1)
        if where == "headers":
            handler.wfile.write(body)

    url = raw_server(trickle)
    client = JudgeClient(_config(url, max_retries=0, timeout=1.0))
    started = time.monotonic()
    with pytest.raises(SpectrumKDError, match="within 1 s"):
        client.verdict("q", "a", "b")
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(("payload", "message"), [
    ({"choices": [{"message": {"content": None}}]}, "no text content"),
    ({"choices": []}, "unexpected reply shape"),
    ({"error": "x"}, "unexpected reply shape"),
    ([1, 2], "unexpected reply shape"),
    (b"<html>busy</html>", "not JSON"),
    (b"\xff\xfe", "not JSON"),
])
def test_malformed_replies_give_one_line_errors(raw_server, payload, message):
    url = raw_server(_json_reply(payload))
    client = JudgeClient(_config(url, max_retries=1))
    with pytest.raises(SpectrumKDError, match=message) as info:
        client.verdict("q", "a", "b")
    assert "\n" not in str(info.value) and client.requests == 2


@pytest.mark.parametrize(("line", "message"), [
    (b"[1, 2]\n", "malformed verdict cache line"),
    (b'{"key": "k"}\n', "malformed verdict cache line"),
    (b'{"key": "k", "verdict": "Z", "judgment": ""}\n', "malformed verdict cache line"),
    (b'{"key": 3, "verdict": "A", "judgment": ""}\n', "malformed verdict cache line"),
    (b"\xff\xfe\n", "not UTF-8"),
    (b"{not json\n", "corrupt verdict cache line"),
])
def test_malformed_cache_lines_give_one_line_errors(tmp_path, line, message):
    cache = tmp_path / "verdicts.jsonl"
    good = json.dumps({"key": "a", "verdict": "A", "judgment": "[[A]]"}).encode() + b"\n"
    cache.write_bytes(good + line + good.replace(b'"a"', b'"b"'))
    with pytest.raises(SpectrumKDError, match=rf"verdicts.jsonl:2: .*{message}") as info:
        JudgeClient(_config("http://127.0.0.1:9/v1"), cache_path=cache)
    assert "\n" not in str(info.value)


def test_torn_last_cache_line_is_dropped_before_appending(server, tmp_path):
    judge, url = server()
    cache = tmp_path / "verdicts.jsonl"
    good = json.dumps({"key": "a", "verdict": "A", "judgment": "[[A]]"}) + "\n"
    cache.write_text(good + '{"key": "torn", "verd')  # a kill mid-write
    client = JudgeClient(_config(url), cache_path=cache)
    assert client.verdict("q", "good", "bad") == "A"
    again = JudgeClient(_config(url), cache_path=cache)  # loads cleanly: no glued line
    assert len(again.cache.entries) == 2
    assert cache.read_text().splitlines()[0] == good.strip()


# ----------------------------------------------------------------------------- the key stays secret

SECRET = "sk-test-5e3f1c0ffee0badc0de"


def _echo_headers(status, *, verdict=None, reason=None):
    """A server that echoes every request header back, in the reason phrase and the body."""

    def reply(handler):
        headers = "".join(f"{k}: {v}\r\n" for k, v in handler.headers.items())
        content = f"You sent:\n{headers}\n" + (f"[[{verdict}]]" if verdict else "")
        payload = ({"choices": [{"message": {"content": content}}]} if verdict
                   else {"error": {"message": f"invalid request; headers were {headers}"}})
        data = json.dumps(payload).encode()
        handler.send_response(status, reason or f"Rejected {handler.headers['Authorization']}")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


@pytest.mark.parametrize("status", [400, 503, 200])
def test_an_echoing_server_never_gets_the_key_into_an_error(raw_server, status, capsys):
    # 400: no retry; 503: retried then reported; 200 without a verdict: "unexpected reply shape"
    url = raw_server(_echo_headers(status))
    client = JudgeClient(JudgeConfig(base_url=url, model="m", api_key=SECRET, backoff=0.0,
                                     max_retries=1))
    with pytest.raises(SpectrumKDError) as info:
        client.verdict("q", "a", "b")
    message = str(info.value)
    assert client.requests >= 1 and "\n" not in message
    assert "[redacted]" in message  # the echo did reach the message, redacted
    assert SECRET not in message and SECRET[3:] not in message
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err


def test_an_echoing_server_never_gets_the_key_into_the_cache(raw_server, tmp_path):
    url = raw_server(_echo_headers(200, verdict="A"))
    cache = tmp_path / "judge_cache.jsonl"
    config = JudgeConfig(base_url=url, model="m", api_key=SECRET, backoff=0.0)
    client = JudgeClient(config, cache_path=cache)
    assert client.verdict("q", "a", "b") == "A"
    text = cache.read_text()
    assert "[redacted]" in text and "You sent" in text  # the judgment is kept, the key is not
    assert SECRET not in text and SECRET[3:] not in text
    assert SECRET not in repr(config) and SECRET not in repr(client.config)


def test_redact_covers_the_key_and_authorization_values():
    from spectrumkd.evaluate.judge import redact

    text = ('Authorization: Bearer abc123\r\n{"authorization": "Basic Zm9vOmJhcg=="} '
            f"key={SECRET} x-api-key: {SECRET}")
    clean = redact(text, [SECRET])
    assert "abc123" not in clean and "Zm9vOmJhcg" not in clean and SECRET not in clean
    assert clean.count("[redacted]") == 4
    assert redact("nothing secret here", [SECRET]) == "nothing secret here"
    assert redact("a b", [None, ""]) == "a b"  # no key: nothing to replace
