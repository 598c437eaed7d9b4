"""LLM-as-a-judge winning rate: the paper's Figure 6 pairwise prompt on an OpenAI-compatible API.

For each question the judge sees the candidate's and the baseline's answers twice, once in each
order (candidate as assistant A, then as assistant B), to cancel position bias. A verdict
``[[A]]``/``[[B]]``/``[[C]]`` (C = tie) scores the candidate 1 / 0 / 0.5; the winning rate is the
mean over all 2n verdicts, in percent (the paper's WR columns; 50 = on par with the baseline).

The endpoint is ``POST {base_url}/chat/completions`` (``base_url`` like
``https://api.deepseek.com/v1`` or ``http://127.0.0.1:8000/v1``) with ``model``, the judge
messages, ``temperature`` (0.7, §C.4) and a bearer key, sent with :mod:`http.client` directly:
redirects are never followed (a 3xx is an error naming its ``Location``, so the key never goes to
another host and a POST never turns into a GET), environment proxies are not used, every request
has a total deadline of ``timeout`` seconds (a watchdog closes the socket, so a server trickling
bytes cannot outlast it), and replies are capped at ``MAX_REPLY_BYTES``. Configuration:
:class:`JudgeConfig`, or
:meth:`JudgeConfig.from_env` reading ``SPECTRUMKD_JUDGE_BASE_URL``, ``SPECTRUMKD_JUDGE_MODEL``
and ``SPECTRUMKD_JUDGE_API_KEY`` (falling back to ``OPENAI_API_KEY``). Transient failures
(connection errors, timeouts, HTTP 429/5xx, a reply that is not JSON, has no text content or no
verdict) are retried with exponential backoff; after the last try, or at once for a redirect or
another 4xx, a one-line :class:`SpectrumKDError` says what went wrong. Each verdict is appended
to an on-disk JSON Lines cache as soon as it arrives (keyed by a hash of the judge model,
temperature and full prompt), so a failed or interrupted run keeps what it paid for; a torn last
line (a kill mid-write) is dropped before the next append, any other malformed line is a
one-line error naming the file and line.

The API key never leaves in anything the client writes or raises: :func:`redact` replaces the
key and the value of every ``Authorization``-like header in each error message and in each
judgment before it is cached, so a server that echoes the request headers (in its reason phrase,
its error body or its verdict text) cannot get the key into an error, a log line, the cache or a
results file; ``JudgeConfig``'s repr leaves the key out.

Not here: single-answer grading, reference-guided grading, multi-turn MT-bench questions.
The judge's own sampling makes verdicts non-deterministic unless the endpoint is.

References: Zheng et al. 2023 (LLM-as-a-judge, MT-bench ``pair-v2`` prompt); the paper's Figure 6
and §C.4 (DeepSeek-V3 as the judge).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spectrumkd import SpectrumKDError

JUDGE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two "
    "AI assistants to the user question displayed below. You should choose the assistant that "
    "follows the user's instructions and answers the user's question better. Your evaluation "
    "should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, "
    "and level of detail of their responses. Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any position biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow "
    "the length of the responses to influence your evaluation. Do not favor certain names of the "
    "assistants. Be as objective as possible. After providing your explanation, output your "
    'final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" '
    'if assistant B is better, and "[[C]]" for a tie.'
)
JUDGE_USER = (
    "### User Question:\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_REPLY_BYTES = 8 << 20
VERDICTS = ("A", "B", "C")
REDACTED = "[redacted]"
# a credential header's value, as an echo may show it: `Authorization: Bearer k`, `"api-key": "k"`
_CREDENTIAL_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key)([\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"((?:[A-Za-z]+[ \t]+)?[^\s\"',;}]+)")  # an optional scheme (Bearer, Basic) and the token


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)  # never in a repr or a log line
    temperature: float = 0.7
    max_tokens: int = 1024
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 2.0  # seconds before the first retry; doubles each time

    @classmethod
    def from_env(cls, **overrides) -> JudgeConfig:
        """A config from ``SPECTRUMKD_JUDGE_*`` variables (see the module docstring)."""
        values = {
            "base_url": os.environ.get("SPECTRUMKD_JUDGE_BASE_URL"),
            "model": os.environ.get("SPECTRUMKD_JUDGE_MODEL"),
            "api_key": os.environ.get("SPECTRUMKD_JUDGE_API_KEY")
            or os.environ.get("OPENAI_API_KEY"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values["base_url"] or not values["model"]:
            raise SpectrumKDError(
                "the judge needs a base URL and a model: set SPECTRUMKD_JUDGE_BASE_URL and "
                "SPECTRUMKD_JUDGE_MODEL (or pass them)"
            )
        return cls(**values)


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[dict]:
    """The Figure 6 chat messages for one ordered pair."""
    user = JUDGE_USER.format(question=question, answer_a=answer_a, answer_b=answer_b)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"C"`` from a judgment, as MT-bench does; None when there is none.

    >>> parse_verdict("A is more detailed. [[A]]"), parse_verdict("[[C]]"), parse_verdict("A")
    ('A', 'C', None)
    """
    found = [v for v in ("A", "B", "C") if f"[[{v}]]" in text]
    return found[0] if len(found) == 1 else None


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with each non-empty secret and every credential header's value replaced.

    >>> redact("Authorization: Bearer t0k / key k1", ["k1"])
    'Authorization: [redacted] / key [redacted]'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL_HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


class VerdictCache:
    """Append-only JSON Lines cache of verdicts: ``{"key", "verdict", "judgment"}`` per line."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        self._complete_bytes: int | None = None  # where a torn last line starts, if any
        if self.path is not None and self.path.is_file():
            self._load(self.path.read_bytes())

    def _load(self, data: bytes) -> None:
        offset = 0
        for line_no, raw in enumerate(data.splitlines(keepends=True), start=1):
            where = f"{self.path}:{line_no}"
            torn = not raw.endswith(b"\n")  # only the last line can lack its newline
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                if torn:
                    self._complete_bytes = offset
                    break
                raise SpectrumKDError(f"{where}: verdict cache line is not UTF-8") from None
            offset += len(raw)
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                if torn:
                    self._complete_bytes = offset - len(raw)
                    break
                raise SpectrumKDError(f"{where}: corrupt verdict cache line (not JSON)") from None
            if not (isinstance(row, dict) and isinstance(row.get("key"), str)
                    and row.get("verdict") in VERDICTS and isinstance(row.get("judgment"), str)):
                raise SpectrumKDError(
                    f"{where}: malformed verdict cache line (expected an object with a string "
                    f"'key', 'verdict' in A/B/C and a string 'judgment'): {text.strip()[:80]!r}"
                )
            self.entries[row["key"]] = row
            if torn:  # a complete row that lost only its newline: keep it, add the newline
                self._complete_bytes = -1

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, verdict: str, judgment: str) -> None:
        row = {"key": key, "verdict": verdict, "judgment": judgment}
        self.entries[key] = row
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as handle:
                if self._complete_bytes == -1:
                    handle.write(b"\n")
                elif self._complete_bytes is not None:
                    handle.truncate(self._complete_bytes)  # drop the torn line before appending
                self._complete_bytes = None
                handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


class JudgeError(Exception):
    """One failed attempt; ``retry`` says whether another attempt may help."""

    def __init__(self, message: str, retry: bool = True):
        super().__init__(" ".join(message.split()))  # one line
        self.retry = retry


def post_json(url: str, payload: dict, headers: dict[str, str], timeout: float) -> object:
    """POST ``payload`` as JSON and return the decoded JSON reply, all within ``timeout`` s.

    No redirects, no proxies, a reply cap; raises :class:`JudgeError` for every failure.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JudgeError(f"judge URL {url!r} is not http(s)://host/...", retry=False)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    expired = threading.Event()

    def watchdog() -> None:  # wakes a blocked read: the deadline is total, not per read
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    stage = "URLError: cannot reach"  # urllib's name for connection-level failures
    try:
        conn.request("POST", path, body=json.dumps(payload).encode(),
                     headers={**headers, "Content-Type": "application/json"})
        response = conn.getresponse()
        stage = "broken reply from"
        body = bytearray()
        while chunk := response.read(65536):
            body += chunk
            if len(body) > MAX_REPLY_BYTES:
                raise JudgeError(f"reply over {MAX_REPLY_BYTES} bytes")
        if expired.is_set() or time.monotonic() > deadline:
            raise TimeoutError
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set() or time.monotonic() > deadline:
            raise JudgeError(f"no complete reply within {timeout:g} s") from None
        raise JudgeError(f"{stage} {parts.netloc}: {type(exc).__name__}: {exc}") from None
    finally:
        timer.cancel()
        conn.close()
    status = response.status
    if 300 <= status < 400:
        raise JudgeError(
            f"HTTP {status} redirect to {response.getheader('Location')!r} is not followed (it "
            "would carry the API key elsewhere); set the base URL to the final address",
            retry=False)
    if status >= 400:
        raise JudgeError(f"HTTP {status} {response.reason}", retry=status in RETRY_STATUS)
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise JudgeError(f"reply is not JSON: {bytes(body[:100])!r}") from None


def reply_text(reply: object) -> str:
    """``choices[0].message.content`` of a chat reply; :class:`JudgeError` if it is not text."""
    try:
        content = reply["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"unexpected reply shape: {str(reply)[:200]}") from None
    if not isinstance(content, str):
        raise JudgeError(f"reply has no text content (content is {content!r})")
    return content


class JudgeClient:
    """Asks an OpenAI-compatible chat endpoint for pairwise verdicts, with retries and a cache."""

    def __init__(
        self,
        config: JudgeConfig,
        *,
        cache_path: str | os.PathLike | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.cache = VerdictCache(cache_path)
        self.sleep = sleep
        self.requests = 0  # HTTP requests sent, for tests and reports

    def cache_key(self, messages: list[dict]) -> str:
        payload = json.dumps(
            [self.config.model, self.config.temperature, messages], ensure_ascii=False
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def redact(self, text: str) -> str:
        """``text`` without the API key or any credential header value (see :func:`redact`)."""
        return redact(text, [self.config.api_key])

    def _post(self, messages: list[dict]) -> str:
        headers = {}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        payload = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        self.requests += 1
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        return reply_text(post_json(url, payload, headers, self.config.timeout))

    def verdict(self, question: str, answer_a: str, answer_b: str) -> str:
        """``"A"``/``"B"``/``"C"`` for one ordered pair (cached; retried on failure)."""
        messages = judge_messages(question, answer_a, answer_b)
        key = self.cache_key(messages)
        hit = self.cache.get(key)
        if hit is not None:
            return hit["verdict"]
        last_error, tries = "no attempt", 0
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.sleep(self.config.backoff * 2 ** (attempt - 1))
            tries += 1
            try:
                judgment = self.redact(self._post(messages))  # what a server echoed stays here
            except JudgeError as exc:
                last_error = self.redact(str(exc))
                if not exc.retry:
                    break
                continue
            verdict = parse_verdict(judgment)
            if verdict is None:
                last_error = f"malformed verdict (no single [[A]]/[[B]]/[[C]]): {judgment[-200:]!r}"
                continue
            self.cache.put(key, verdict, judgment)
            return verdict
        raise SpectrumKDError(self.redact(
            f"judge {self.config.model} at {self.config.base_url} failed after "
            f"{tries} {'try' if tries == 1 else 'tries'}: {last_error} "
            f"({len(self.cache.entries)} verdicts cached so far are kept)"
        ))


@dataclass(frozen=True)
class WinRate:
    """Winning rate of a candidate against a baseline, in percent, and its verdict counts."""

    rate: float
    wins: int
    ties: int
    losses: int
    per_example: list[float]  # candidate's mean score per question over both orders, 0-100


def winning_rate(
    client: JudgeClient,
    questions: Sequence[str],
    candidate: Sequence[str],
    baseline: Sequence[str],
) -> WinRate:
    """Winning rate of ``candidate`` answers over ``baseline`` answers, both orders, ties half."""
    if not len(questions) == len(candidate) == len(baseline):
        raise SpectrumKDError(
            f"{len(questions)} questions, {len(candidate)} candidate and {len(baseline)} "
            "baseline answers: they must pair up"
        )
    if not questions:
        raise SpectrumKDError("winning_rate needs at least one question")
    wins = ties = losses = 0
    per_example = []
    for question, ours, theirs in zip(questions, candidate, baseline):
        first = {"A": 1.0, "B": 0.0, "C": 0.5}[client.verdict(question, ours, theirs)]
        second = {"A": 0.0, "B": 1.0, "C": 0.5}[client.verdict(question, theirs, ours)]
        for score in (first, second):
            wins += score == 1.0
            ties += score == 0.5
            losses += score == 0.0
        per_example.append(50.0 * (first + second))
    rate = 100.0 * (wins + 0.5 * ties) / (wins + ties + losses)
    return WinRate(rate=rate, wins=wins, ties=ties, losses=losses, per_example=per_example)
