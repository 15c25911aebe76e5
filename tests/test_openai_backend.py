"""Tests for the OpenAI-compatible backend against a real in-process HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from unredact.backends.base import GenerationRequest, GenerationResult, Progress
from unredact.backends.openai import OpenAIBackend
from unredact.backends.registry import BackendOptions, load_backend
from unredact.errors import BackendError


@dataclass
class Reply:
    """What the fake server answers to one chat request."""

    status: int = 200
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def completion(text: str, finish: str = "stop", tokens: int | None = 3, **message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "cmpl-1",
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, **message},
                "finish_reason": finish,
            }
        ],
    }
    if tokens is not None:
        body["usage"] = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
    return body


Responder = Callable[[dict[str, Any], int], Reply]


def default_responder(payload: dict[str, Any], attempt: int) -> Reply:
    return Reply(body=completion("echo: " + payload["messages"][-1]["content"]))


class _QuietServer(ThreadingHTTPServer):
    """Threaded server whose handler threads never block shutdown and which ignores client resets."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None


class FakeServer:
    """A threaded chat-completions server; ``responder(payload, attempt_no)`` scripts each answer."""

    def __init__(self) -> None:
        self.responder: Responder = default_responder
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.payloads: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[tuple[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def do_GET(self) -> None:
                with server.lock:
                    server.paths.append(("GET", self.path))
                if self.path.endswith("/locked/models"):
                    self._send(401, b'{"error": {"message": "bad key"}}')
                elif self.path.endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "m"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length))
                content = payload["messages"][-1]["content"]
                with server.lock:
                    server.paths.append(("POST", self.path))
                    server.payloads.append(payload)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    attempt = server.attempts.get(content, 0) + 1
                    server.attempts[content] = attempt
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.responder(payload, attempt)
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    body = reply.body
                    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
                    self._send(reply.status, raw, reply.headers)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


def make_backend(
    base_url: str,
    *,
    timeout_s: float = 5.0,
    concurrency: int = 4,
    max_retries: int = 3,
    api_key_env: str = "OPENAI_API_KEY",
    model: str = "qwen2.5:0.5b",
) -> OpenAIBackend:
    options = BackendOptions(
        timeout_s=timeout_s,
        concurrency=concurrency,
        max_retries=max_retries,
        api_key_env=api_key_env,
        extra={"backoff_base_s": 0.01, "backoff_max_s": 0.05},
    )
    backend = load_backend(f"openai/{model}@{base_url}", options)
    assert isinstance(backend, OpenAIBackend)
    return backend


def req(key: str, content: str | None = None, **kw: Any) -> GenerationRequest:
    return GenerationRequest(key=key, messages=({"role": "user", "content": content or key},), **kw)


def run_all(backend: OpenAIBackend, requests: list[GenerationRequest]) -> dict[str, GenerationResult]:
    try:
        results = list(backend.generate(requests))
    finally:
        backend.close()
    assert len(results) == len(requests)
    by_key = {r.key: r for r in results}
    assert set(by_key) == {r.key for r in requests}
    return by_key


# -- normal operation ---------------------------------------------------------------------------------


def test_normal_completion_payload_and_result(server: FakeServer) -> None:
    backend = make_backend(server.base_url)
    request = req("p1#0", "Hello there", max_new_tokens=17, temperature=0.7, top_p=0.9, seed=42, stop=("", "END"))
    res = run_all(backend, [request])["p1#0"]
    assert res.text == "echo: Hello there"
    assert res.finish_reason == "stop"
    assert res.error is None
    assert res.n_tokens == 3
    assert res.latency_s > 0
    assert res.meta["attempts"] == 1
    assert res.meta["served_model"] == "served-model"
    assert "reasoning" not in res.meta

    assert ("GET", "/v1/models") in server.paths  # reachability check
    assert ("POST", "/v1/chat/completions") in server.paths
    payload = server.payloads[0]
    assert payload == {
        "model": "qwen2.5:0.5b",
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 17,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 42,
        "stop": ["END"],
    }
    assert "authorization" not in server.headers[0]  # no key configured -> no header


def test_no_stop_field_when_empty_and_many_results_with_progress(server: FakeServer) -> None:
    backend = make_backend(server.base_url, concurrency=3)
    seen: list[tuple[int, int, int]] = []

    def on_progress(p: Progress) -> None:
        seen.append((p.done, p.total, p.tokens))

    requests = [req(f"k{i}") for i in range(7)]
    results = list(backend.generate(requests, progress=on_progress))
    backend.close()
    assert sorted(r.key for r in results) == sorted(r.key for r in requests)
    assert all(r.text == f"echo: {r.key}" for r in results)
    assert all("stop" not in p for p in server.payloads)
    assert seen == [(i, 7, 3 * i) for i in range(1, 8)]
    assert [m for m, _ in server.paths].count("GET") == 1


def test_length_reasoning_and_missing_usage(server: FakeServer) -> None:
    def responder(payload: dict[str, Any], attempt: int) -> Reply:
        content = payload["messages"][-1]["content"]
        if content == "long":
            return Reply(body=completion("truncated", finish="length", tokens=None))
        if content == "think":
            return Reply(body=completion("final answer", finish="eos", reasoning_content="let me think"))
        if content == "think-only":
            return Reply(body=completion(None, finish="length", reasoning="still thinking"))  # type: ignore[arg-type]
        return Reply(body=completion("x", finish="content_filter"))

    server.responder = responder
    res = run_all(make_backend(server.base_url), [req("long"), req("think"), req("think-only"), req("other")])
    long = res["long"]
    assert (long.text, long.finish_reason, long.n_tokens) == ("truncated", "length", None)
    assert (res["think"].text, res["think"].finish_reason) == ("final answer", "stop")
    assert res["think"].meta["reasoning"] == "let me think"
    assert (res["think-only"].text, res["think-only"].finish_reason) == ("", "length")
    assert res["think-only"].error is None
    assert res["think-only"].meta["reasoning"] == "still thinking"
    assert (res["other"].text, res["other"].finish_reason) == ("x", "stop")


# -- retries ------------------------------------------------------------------------------------------


def test_429_then_success_honours_retry_after(server: FakeServer) -> None:
    def responder(payload: dict[str, Any], attempt: int) -> Reply:
        if attempt == 1:
            return Reply(429, {"error": {"message": "rate limited"}}, headers={"Retry-After": "0"})
        return default_responder(payload, attempt)

    server.responder = responder
    # a large backoff base proves Retry-After: 0 is used instead of the exponential delay
    backend = make_backend(server.base_url)
    backend.backoff_base_s = 30.0
    start = time.perf_counter()
    res = run_all(backend, [req("a")])["a"]
    assert time.perf_counter() - start < 3.0
    assert res.text == "echo: a" and res.error is None
    assert res.meta["attempts"] == 2
    assert server.attempts["a"] == 2


def test_500_then_success(server: FakeServer) -> None:
    def responder(payload: dict[str, Any], attempt: int) -> Reply:
        if attempt <= 2:
            return Reply(500 if attempt == 1 else 503, b"internal error")
        return default_responder(payload, attempt)

    server.responder = responder
    res = run_all(make_backend(server.base_url, max_retries=3), [req("b")])["b"]
    assert res.text == "echo: b" and res.finish_reason == "stop"
    assert res.meta["attempts"] == 3


def test_5xx_exhausts_retries(server: FakeServer) -> None:
    server.responder = lambda payload, attempt: Reply(502, {"error": {"message": "bad\ngateway"}})
    res = run_all(make_backend(server.base_url, max_retries=2), [req("c")])["c"]
    assert res.finish_reason == "error" and res.text == ""
    assert res.error == "HTTP 502: bad gateway (after 3 attempts)"
    assert server.attempts["c"] == 3


def test_4xx_not_retried(server: FakeServer) -> None:
    server.responder = lambda payload, attempt: Reply(400, {"error": {"message": "model not found"}})
    res = run_all(make_backend(server.base_url, max_retries=3), [req("d")])["d"]
    assert res.finish_reason == "error"
    assert res.error == "HTTP 400: model not found"
    assert server.attempts["d"] == 1


def test_timeout_becomes_error_after_retries(server: FakeServer) -> None:
    def responder(payload: dict[str, Any], attempt: int) -> Reply:
        if payload["messages"][-1]["content"] == "slow":
            return Reply(body=completion("late"), delay_s=1.0)
        return default_responder(payload, attempt)

    server.responder = responder
    start = time.perf_counter()
    res = run_all(make_backend(server.base_url, timeout_s=0.3, max_retries=1), [req("slow"), req("fast")])
    elapsed = time.perf_counter() - start
    assert res["fast"].text == "echo: fast"
    assert res["slow"].finish_reason == "error" and res["slow"].text == ""
    assert res["slow"].error is not None
    assert res["slow"].error.startswith("timeout after 0.3s")
    assert res["slow"].error.endswith("(after 2 attempts)")
    assert server.attempts["slow"] == 2
    assert elapsed < 3.0


# -- malformed responses -------------------------------------------------------------------------------


def test_malformed_responses_become_error_records(server: FakeServer) -> None:
    bodies: dict[str, bytes | dict[str, Any]] = {
        "badjson": b'{"choices": [',
        "nochoices": {"id": "x", "object": "chat.completion"},
        "emptychoices": {"choices": []},
        "nocontent": {"choices": [{"message": {"role": "assistant"}, "finish_reason": "stop"}]},
        "notutf8": b'{"choices": [{"message": {"content": "\xff\xfe bad"}, "finish_reason": "stop"}]}',
        "array": [1, 2],  # type: ignore[dict-item]
        "ok": completion("fine"),
    }
    server.responder = lambda payload, attempt: Reply(body=bodies[payload["messages"][-1]["content"]])
    res = run_all(make_backend(server.base_url), [req(k) for k in bodies])
    assert res["ok"].text == "fine" and res["ok"].error is None
    expected = {
        "badjson": "malformed JSON response",
        "nochoices": "response has no choices",
        "emptychoices": "response has no choices",
        "nocontent": "response message has no text content",
        "notutf8": "response body is not valid UTF-8",
        "array": "malformed response: expected a JSON object, got list",
    }
    for key, prefix in expected.items():
        r = res[key]
        assert r.finish_reason == "error" and r.text == "" and r.n_tokens is None, key
        assert r.error is not None and r.error.startswith(prefix), (key, r.error)
        assert "\n" not in r.error
        assert server.attempts[key] == 1  # a 200 with a bad body is not retried


# -- concurrency --------------------------------------------------------------------------------------


def test_concurrency_bound_respected(server: FakeServer) -> None:
    server.responder = lambda payload, attempt: Reply(body=completion("ok"), delay_s=0.1)
    res = run_all(make_backend(server.base_url, concurrency=3), [req(f"r{i}") for i in range(12)])
    assert all(r.text == "ok" for r in res.values())
    assert server.max_in_flight == 3


# -- reachability -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_raises_before_any_result() -> None:
    base = f"http://127.0.0.1:{_free_port()}/v1"
    backend = make_backend(base)
    got: list[GenerationResult] = []
    with pytest.raises(BackendError) as info:
        for result in backend.generate([req("a"), req("b")]):
            got.append(result)
    backend.close()
    assert got == []
    message = str(info.value)
    assert message.startswith(f"cannot reach {base}: ")
    assert "\n" not in message


def test_models_endpoint_missing_still_proceeds(server: FakeServer) -> None:
    # a server that 404s GET /models (e.g. some llama.cpp builds) is reachable all the same
    res = run_all(make_backend(server.base_url.removesuffix("/v1") + "/other"), [req("z")])
    assert ("GET", "/other/models") in server.paths
    assert res["z"].text == "echo: z"


def test_refused_credentials_fail_before_any_result(server: FakeServer) -> None:
    backend = make_backend(server.base_url.removesuffix("/v1") + "/locked")
    with pytest.raises(BackendError, match=r"refused the credentials \(HTTP 401\)"):
        next(iter(backend.generate([req("z")])))
    assert not any(method == "POST" for method, _ in server.paths)


# -- credentials and describe --------------------------------------------------------------------------


def test_api_key_sent_as_bearer_and_hidden(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-secret-123"
    monkeypatch.setenv("MY_KEY", secret)
    server.responder = lambda payload, attempt: Reply(401, {"error": {"message": f"bad key {secret}"}})
    backend = make_backend(server.base_url, api_key_env="MY_KEY")
    desc = backend.describe()
    res = run_all(backend, [req("a")])["a"]
    assert server.headers[0]["authorization"] == f"Bearer {secret}"
    assert desc["backend"] == "openai"
    assert desc["model"] == "qwen2.5:0.5b"
    assert desc["base_url"] == server.base_url
    assert desc["concurrency"] == 4
    assert desc["api_key_set"] is True
    assert secret not in json.dumps(desc)
    assert res.error == "HTTP 401: bad key ***"


def test_describe_strips_userinfo_and_query(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = OpenAIBackend(
        "openai",
        "gpt-x@https://user:pw@api.example.com:8443/v1/?api-version=1#f",
        BackendOptions(concurrency=2),
    )
    desc = backend.describe()
    backend.close()
    assert desc["base_url"] == "https://api.example.com:8443/v1"
    assert desc["concurrency"] == 2
    assert desc["model"] == "gpt-x"
    dumped = json.dumps(desc)
    assert "pw" not in dumped and "api-version" not in dumped and "user" not in dumped
    assert backend.spec == "openai/gpt-x@https://api.example.com:8443/v1"


def test_base_url_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    b1 = OpenAIBackend("openai", "gpt-4o", BackendOptions())
    assert b1.describe()["base_url"] == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1/")
    b2 = OpenAIBackend("openai", "llama", BackendOptions())
    assert b2.describe()["base_url"] == "http://localhost:8000/v1"
    assert b2.describe()["api_key_set"] is False
    for b in (b1, b2):
        b.close()
    with pytest.raises(BackendError):
        OpenAIBackend("openai", "@http://localhost:1/v1", BackendOptions())


def test_consumer_stopping_early_does_not_hang(server: FakeServer) -> None:
    server.responder = lambda payload, attempt: Reply(body=completion("ok"), delay_s=0.2)
    backend = make_backend(server.base_url, concurrency=2)
    start = time.perf_counter()
    stream = backend.generate([req(f"s{i}") for i in range(20)])
    first = next(stream)
    stream.close()
    backend.close()
    assert first.text == "ok"
    assert time.perf_counter() - start < 2.0
    assert len(server.payloads) < 20  # queued requests were cancelled
