"""The judge client against a real HTTP server on 127.0.0.1: canned verdicts, both orders, ties
counted half, a down endpoint and malformed verdicts (clear error after retries, cache kept)."""

import json
import socket
import threading
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
