"""`spectrumkd judge` through the real entry point against a real HTTP judge on 127.0.0.1.

The canned judge prefers the answer containing "good" (a tie when both or neither do), answers
"glitch" prompts first with a malformed verdict and "flaky" prompts first with HTTP 500, and can
be told to fail after N replies. The eval folders are written by the project's own writers
(`suites.run_instruct`) and by `spectrumkd eval --completions`.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spectrumkd import SpectrumKDError
from spectrumkd.evaluate import suites
from spectrumkd.evaluate.judge_runs import pair_runs
from spectrumkd.evaluate.results import finish_results, new_results, write_results
from spectrumkd.evaluate.sets import load_set

ENV = {k: v for k, v in os.environ.items()
       if not k.startswith("SPECTRUMKD_JUDGE_") and k != "OPENAI_API_KEY"}
ENV.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

ROWS = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hello.", "input": "", "output": "Hello."},
    {"instruction": "Name a fruit.", "input": "", "output": "Apple."},
    {"instruction": "Name a city.", "input": "", "output": "Paris."},
]
# candidate seed 10 vs baseline, per example: win, loss, tie, win (after a malformed verdict),
# tie (after an HTTP 500): by hand wins 4, ties 4, losses 2 of 10 verdicts -> WR (4 + 2)/10 = 60%
CANDIDATE = {10: ["good answer", "meh", "fine", "good glitch", "flaky good"],
             20: ["good one", "good too", "x", "y", "z"]}
BASELINE = ["bad answer", "good one", "also fine", "plain", "good too"]


class Judge:
    def __init__(self):
        self.bodies = []
        self.seen = set()
        self.fail_after = None  # 503 for every request after this many good replies
        self.good = 0
        self.echo = None  # "verdict" / "error": echo the request headers back (a leaky server)

    def reply(self, body, auth):
        self.bodies.append(body)
        if auth != "Bearer test-key":
            return 401, {"error": "bad key"}
        if self.fail_after is not None and self.good >= self.fail_after:
            return 503, {"error": "overloaded"}
        user = body["messages"][1]["content"]
        a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
        first_time = user not in self.seen
        self.seen.add(user)
        if body["model"] == "broken" or ("glitch" in a + b and first_time):
            return 200, {"choices": [{"message": {"content": "Both are fine, I cannot decide."}}]}
        if "flaky" in a + b and first_time:
            return 500, {"error": "internal"}
        if body["model"] == "always-a":
            verdict = "A"
        else:
            verdict = "C" if ("good" in a) == ("good" in b) else ("A" if "good" in a else "B")
        self.good += 1
        return 200, {"choices": [{"message": {"content": f"Because. [[{verdict}]]"}}]}


@pytest.fixture
def judge():
    state = Judge()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            assert self.path == "/v1/chat/completions"
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, payload = state.reply(body, self.headers.get("Authorization"))
            if state.echo:
                echoed = f"you sent {dict(self.headers)}"
                status, payload = ((200, {"choices": [{"message": {"content": echoed + " [[C]]"}}]})
                                   if state.echo == "verdict" else (400, {"error": echoed}))
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
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def cli(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "spectrumkd.cli", *map(str, args)],
                          capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_data(path, rows=ROWS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_run(out, data, answers_by_seed, *, limit=None, model="candidate"):
    """An eval folder written by the eval runner's own functions (instruct suite, seed files)."""
    eval_set = load_set("dolly", "instruct", data=data, limit=limit)
    header_base = {"suite": "instruct", "model_fingerprint": model,
                   "settings": {"decoding": None, "shots": None}}
    results = new_results(suite="instruct", model=model, model_fingerprint=model,
                          settings={"limit": limit})
    answers = {seed: list(texts[: len(eval_set.items)]) for seed, texts in answers_by_seed.items()}
    results["sets"]["dolly"] = suites.run_instruct(
        eval_set, out_dir=out, seeds=list(answers), header_base=header_base,
        batches_for_seed=lambda seed, prompts: suites.list_batches(answers[seed], 2))
    write_results(out / "results.json", finish_results(results))
    return out


@pytest.fixture
def runs(tmp_path):
    data = write_data(tmp_path / "dolly.jsonl")
    write_run(tmp_path / "cand" / "eval", data, CANDIDATE)
    completions = tmp_path / "base.jsonl"
    completions.write_text("".join(json.dumps({"id": f"dolly-{i}", "completion": text}) + "\n"
                                   for i, text in enumerate(BASELINE, start=1)))
    base = tmp_path / "base"
    cli("eval", "--sets", "dolly", "--data", data, "--completions", completions, "--out", base)
    return tmp_path / "cand", base, data


def judge_args(cand, base, url, *extra):
    return ["judge", "--candidate", cand, "--baseline", base, "--base-url", url, "--model",
            "judge-model", "--backoff", "0", *extra]


def test_judge_cache_resume_and_compare(judge, runs):
    cand, base, _ = runs
    out = cand / "eval"  # the default --out: the candidate's eval folder
    cache = out / "judge_cache.jsonl"
    key = {"SPECTRUMKD_JUDGE_API_KEY": "test-key"}
    # the judge goes down after 3 verdicts: exit 2, a clear message, the 3 verdicts kept
    judge.fail_after = 3
    proc = cli(*judge_args(cand, base, judge.url, "--retries", "1"), env=key, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "HTTP 503" in proc.stderr and "example 'dolly-2'" in proc.stderr
    assert "failed after 2 tries" in proc.stderr and "rerun" in proc.stderr
    assert len(cache.read_text().splitlines()) == 3 and not (out / "judge.json").exists()
    sent = len(judge.bodies)
    assert sent == 5  # 3 good + 2 tries of the 4th

    # healthy again: only the 7 missing verdicts are asked, plus one retry per order after the
    # malformed verdicts of example 4 and one per order after the HTTP 500s of example 5
    judge.fail_after = None
    proc = cli(*judge_args(cand, base, judge.url), env=key)
    assert len(judge.bodies) - sent == 7 + 2 + 2
    report = json.loads((out / "judge.json").read_text())
    dolly = report["sets"]["dolly"]
    assert (dolly["wins"], dolly["ties"], dolly["losses"]) == (4, 4, 2)
    assert dolly["winning_rate"] == pytest.approx(60.0) and report["average"] == pytest.approx(60.0)
    assert dolly["n"] == 5 and dolly["verdicts"] == 10
    assert dolly["candidate_file"].endswith("seed10.jsonl")
    assert dolly["baseline_file"].endswith("seedcompletions.jsonl")  # the run's only file
    assert report["judge"] == {"model": "judge-model", "base_url": judge.url, "max_tokens": 1024}
    assert report["protocol"]["both_orders"] and report["protocol"]["temperature"] == 0.7
    assert "test-key" not in (out / "judge.json").read_text()
    assert "dolly: WR 60.00 (wins 4, ties 4, losses 2; n=5)" in proc.stdout
    rows = [json.loads(line) for line in (out / "judge_verdicts.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"dolly-{i}" for i in range(1, 6)]
    assert [r["score"] for r in rows] == [100.0, 0.0, 50.0, 100.0, 50.0]
    assert [(r["candidate_first"], r["baseline_first"]) for r in rows[:3]] == [
        ("A", "B"), ("B", "A"), ("C", "C")]
    # the question is the set's instruction (with its input); both orders were asked
    prompts = [b["messages"][1]["content"] for b in judge.bodies]
    assert any("Add the numbers.\n\n2 and 3" in p and p.index("meh") < p.index("good one")
               for p in prompts)
    assert any("Add the numbers." in p and p.index("good one") < p.index("meh") for p in prompts)
    assert all(b["temperature"] == 0.7 and b["model"] == "judge-model" for b in judge.bodies)

    # a rerun asks nothing: every verdict comes from the cache
    sent = len(judge.bodies)
    proc = cli(*judge_args(cand, base, judge.url), env=key)
    assert len(judge.bodies) == sent and "0 judge requests" in proc.stdout
    assert json.loads((out / "judge.json").read_text())["sets"]["dolly"]["winning_rate"] == 60.0

    # compare shows the WR column of the judged run
    table = cli("compare", base, cand, "--out", cand.parent / "cmp.md").stdout
    assert "DollyEval (WR)" in table and "Avg. WR" in table
    assert "| cand |" in table and "60.00" in table.split("| cand |")[1]

    # a down endpoint: exit 2 with a clear message, the cache untouched
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    before = cache.read_bytes()
    proc = cli(*judge_args(cand, base, closed, "--retries", "1", "--limit", "1", "--model", "other"),
               env=key, check=False)
    assert proc.returncode == 2
    assert "judge other at" in proc.stderr and "failed after 2 tries" in proc.stderr
    assert "URLError" in proc.stderr and "Traceback" not in proc.stderr
    assert cache.read_bytes() == before


def test_orders_seeds_env_and_bad_verdicts(judge, runs, tmp_path):
    cand, base, _ = runs
    # a judge that always says [[A]] (pure position bias) gives exactly 50%: the orders cancel
    env = {"SPECTRUMKD_JUDGE_BASE_URL": judge.url, "SPECTRUMKD_JUDGE_MODEL": "always-a",
           "OPENAI_API_KEY": "test-key"}
    cli("judge", "--candidate", cand, "--baseline", base, "--out", tmp_path / "a", env=env)
    dolly = json.loads((tmp_path / "a" / "judge.json").read_text())["sets"]["dolly"]
    assert (dolly["wins"], dolly["ties"], dolly["losses"], dolly["winning_rate"]) == (5, 0, 5, 50.0)
    # --seed 20 judges the other seed file; --limit 2: a win and a tie -> 75%
    cli(*judge_args(cand, base, judge.url, "--seed", "20", "--limit", "2", "--api-key-env",
                    "MY_KEY", "--out", tmp_path / "s"), env={"MY_KEY": "test-key"})
    dolly = json.loads((tmp_path / "s" / "judge.json").read_text())["sets"]["dolly"]
    assert dolly["candidate_file"].endswith("seed20.jsonl") and dolly["n"] == 2
    assert (dolly["wins"], dolly["ties"], dolly["losses"], dolly["winning_rate"]) == (2, 2, 0, 75.0)
    # malformed verdicts after every retry: exit 2, saying so
    proc = cli(*judge_args(cand, base, judge.url, "--model", "broken", "--retries", "2",
                           "--out", tmp_path / "b"), env={"MY_KEY": "test-key",
                                                          "OPENAI_API_KEY": "test-key"},
               check=False)
    assert proc.returncode == 2 and "malformed verdict" in proc.stderr
    assert "failed after 3 tries" in proc.stderr
    # a wrong key is not retried (HTTP 401) and is reported
    proc = cli(*judge_args(cand, base, judge.url, "--out", tmp_path / "k"),
               env={"OPENAI_API_KEY": "wrong"}, check=False)
    assert proc.returncode == 2 and "HTTP 401" in proc.stderr and "failed after" in proc.stderr
    # no endpoint configured
    proc = cli("judge", "--candidate", cand, "--baseline", base, check=False)
    assert proc.returncode == 2 and "SPECTRUMKD_JUDGE_BASE_URL" in proc.stderr
    proc = cli(*judge_args(cand, base, judge.url, "--api-key-env", "NOT_SET_ANYWHERE"),
               check=False)
    assert proc.returncode == 2 and "NOT_SET_ANYWHERE is not set" in proc.stderr


def test_pairing_errors(runs, tmp_path):
    cand, base, data = runs
    # a baseline evaluated on 4 examples only: the extra id is named
    short = write_run(tmp_path / "short", data, {10: BASELINE}, limit=4, model="short")
    with pytest.raises(SpectrumKDError, match=r"only the candidate has dolly-5"):
        pair_runs(cand, short)
    with pytest.raises(SpectrumKDError, match=r"only the baseline has dolly-5"):
        pair_runs(short, cand)
    # other questions (a different data file): refused
    other = write_data(tmp_path / "other.jsonl", [{**r, "output": "x"} for r in ROWS])
    moved = write_run(tmp_path / "other", other, {10: BASELINE}, model="other")
    with pytest.raises(SpectrumKDError, match="answered different questions"):
        pair_runs(cand, moved)
    # a seed the run does not have, and a set it does not have
    with pytest.raises(SpectrumKDError, match=r"no seed30.jsonl .*choose another --seed"):
        pair_runs(cand, base, seed=30)
    with pytest.raises(SpectrumKDError, match="no results for vicuna"):
        pair_runs(cand, base, sets=["vicuna"])
    # the data file moved: --data finds it again by its fingerprint
    _, _, paired = pair_runs(cand, base, limit=2)
    assert paired[0].ids == ["dolly-1", "dolly-2"]
    assert paired[0].questions == ["Name a colour.", "Add the numbers.\n\n2 and 3"]
    assert paired[0].candidate == ["good answer", "meh"] and paired[0].baseline[1] == "good one"
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(data.read_bytes())
    data.unlink()
    with pytest.raises(SpectrumKDError, match="pass --data FILE"):
        pair_runs(cand, base, data_root=tmp_path / "nowhere")
    _, _, paired = pair_runs(cand, base, data=copy)
    assert paired[0].source == str(copy) and len(paired[0].ids) == 5
    proc = cli("judge", "--candidate", tmp_path / "nothing", "--baseline", base,
               "--base-url", "http://127.0.0.1:9/v1", "--model", "m", check=False)
    assert proc.returncode == 2 and "not a `spectrumkd eval` output folder" in proc.stderr


def test_the_key_never_reaches_a_file_or_a_message(judge, runs, tmp_path):
    """A server that echoes the request headers (key included) in its verdicts and errors."""
    cand, base, _ = runs
    secret = "sk-live-0123456789abcdef"
    judge.echo = "verdict"
    out = tmp_path / "echo"
    proc = cli(*judge_args(cand, base, judge.url, "--out", out, "--limit", "2"),
               env={"SPECTRUMKD_JUDGE_API_KEY": secret})
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert set(written) == {"judge.json", "judge_verdicts.jsonl", "judge_cache.jsonl"}
    assert "[redacted]" in written["judge_verdicts.jsonl"]  # the echo was stored, redacted
    for text in [*written.values(), proc.stdout, proc.stderr]:
        assert secret not in text and secret[8:] not in text
    judge.echo = "error"
    proc = cli(*judge_args(cand, base, judge.url, "--out", tmp_path / "err", "--model", "x"),
               env={"SPECTRUMKD_JUDGE_API_KEY": secret}, check=False)
    assert proc.returncode == 2 and "HTTP 400" in proc.stderr
    assert secret not in proc.stdout + proc.stderr and secret[8:] not in proc.stderr
