"""Black-box backend for any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, APIs)."""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from unredact.backends.base import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressCallback,
)
from unredact.errors import BackendError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_MAX_ERROR_CHARS = 300
_SCHEME = re.compile(r"@(?=https?://)", re.IGNORECASE)


def _one_line(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    """Collapse whitespace so an error reason fits on one line, truncating long ones."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _parse_spec_rest(rest: str) -> tuple[str, str | None]:
    """Split ``<model>@<base_url>`` into model and optional base URL."""
    match = _SCHEME.search(rest)
    if match:
        return rest[: match.start()], rest[match.end() :]
    if "@" in rest:
        model, _, url = rest.rpartition("@")
        return model, (url if "://" in url else f"http://{url}")
    return rest, None


def _safe_url(url: httpx.URL) -> str:
    """The URL without credentials, query or fragment, for records and messages."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path.rstrip('/')}"


class _AttemptError(Exception):
    """A failed attempt; ``retryable`` says whether another try may help."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class OpenAIBackend:
    """Sends chat requests concurrently over HTTP, with retries; never imports torch."""

    def __init__(
        self,
        kind: str,
        rest: str,
        options: Any = None,
        *,
        backoff_base_s: float | None = None,
        backoff_max_s: float | None = None,
        retry_after_max_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.spec = f"{kind}/{rest}"
        model, url = _parse_spec_rest(rest)
        model = model.strip()
        if not model:
            raise BackendError(f"{kind!r} model spec names no model (expected {kind}/MODEL[@BASE_URL])")
        self.model = model
        raw_url = url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        try:
            parsed = httpx.URL(raw_url.strip())
        except (httpx.InvalidURL, TypeError, ValueError):  # the message may echo credentials: drop it
            raise BackendError(f"invalid base URL for {kind}/{model} (expected http(s)://HOST[:PORT]/PATH)") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BackendError(f"invalid base URL {_safe_url(parsed)!r}: expected http(s)://HOST[:PORT]/PATH")
        self._url = parsed
        self.base_url = _safe_url(parsed)
        if url is not None and (parsed.userinfo or parsed.query or parsed.fragment):
            self.spec = f"{kind}/{model}@{self.base_url}"  # never echo credentials in the spec
        self._chat_url = parsed.copy_with(path=parsed.path.rstrip("/") + "/chat/completions")
        self._models_url = parsed.copy_with(path=parsed.path.rstrip("/") + "/models")

        extra: dict[str, Any] = dict(getattr(options, "extra", None) or {})
        self.concurrency = max(1, int(getattr(options, "concurrency", 4)))
        self.timeout_s = float(getattr(options, "timeout_s", 120.0))
        self.max_retries = max(0, int(getattr(options, "max_retries", 4)))
        self.api_key_env = str(getattr(options, "api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY")
        self.backoff_base_s = float(backoff_base_s if backoff_base_s is not None else extra.get("backoff_base_s", 1.0))
        self.backoff_max_s = float(backoff_max_s if backoff_max_s is not None else extra.get("backoff_max_s", 30.0))
        self.retry_after_max_s = float(
            retry_after_max_s if retry_after_max_s is not None else extra.get("retry_after_max_s", 60.0)
        )
        self.max_tokens_param = str(extra.get("max_tokens_param", "max_tokens"))
        self.check_reachable = bool(extra.get("check_reachable", True))

        self._api_key = os.environ.get(self.api_key_env) or None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            transport=transport,
        )
        self._reachable = False
        self._stop = threading.Event()

    # -- helpers -----------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Remove credentials from any text that may reach the user."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        raw = str(self._url)
        if raw != self.base_url:
            text = text.replace(raw, self.base_url)
        if self._url.userinfo:
            text = text.replace(self._url.userinfo.decode("utf-8", "replace"), "***")
        return _one_line(text)

    @staticmethod
    def _exc_reason(exc: BaseException) -> str:
        msg = str(exc).strip()
        return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__

    def _parse_retry_after(self, value: str | None) -> float | None:
        if not value:
            return None
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
        if seconds != seconds:  # NaN
            return None
        return min(max(seconds, 0.0), self.retry_after_max_s)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter for retry number ``attempt`` (0-based)."""
        delay = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return delay / 2 + random.uniform(0.0, delay / 2)

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            self.max_tokens_param: request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        stop = [s for s in request.stop if s]
        if stop:
            payload["stop"] = stop
        return payload

    def _error_body(self, response: httpx.Response) -> str:
        """A short reason from an error response body (OpenAI-style ``error.message`` when present)."""
        try:
            text = response.content.decode("utf-8", "replace")
        except httpx.HTTPError:
            return ""
        try:
            data = json.loads(text)
        except ValueError:
            return _one_line(text, 160)
        if isinstance(data, dict):
            err = data.get("error", data.get("detail", data.get("message")))
            if isinstance(err, dict):
                err = err.get("message", err)
            if err is not None:
                return _one_line(str(err), 160)
        return _one_line(text, 160)

    def _attempt(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One HTTP attempt: the decoded JSON object, or ``_AttemptError``."""
        try:
            response = self._client.post(self._chat_url, json=payload)
        except httpx.TimeoutException as exc:
            raise _AttemptError(f"timeout after {self.timeout_s:g}s ({type(exc).__name__})", True) from exc
        except httpx.TransportError as exc:
            raise _AttemptError(f"connection error: {self._exc_reason(exc)}", True) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            detail = self._error_body(response)
            raise _AttemptError(
                f"HTTP {status}" + (f": {detail}" if detail else ""),
                True,
                self._parse_retry_after(response.headers.get("retry-after")),
            )
        if status >= 400:
            detail = self._error_body(response)
            raise _AttemptError(f"HTTP {status}" + (f": {detail}" if detail else ""), False)
        if status >= 300:
            raise _AttemptError(f"unexpected HTTP {status} (redirect not followed)", False)
        try:
            text = response.content.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"response body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            raise _AttemptError(reason, False) from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise _AttemptError(f"malformed JSON response: {exc}", False) from exc
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise _AttemptError(f"malformed response: expected a JSON object, got {kind}", False)
        return data

    @staticmethod
    def _content_text(content: Any) -> str | None:
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # content parts
            parts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
            return "".join(parts) if parts or not content else None
        return None

    def _to_result(self, key: str, data: dict[str, Any], latency: float, attempts: int) -> GenerationResult:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            err = data.get("error")
            reason = "response has no choices"
            if isinstance(err, dict) and err.get("message"):
                reason += f" (error: {err['message']})"
            return self._error(key, reason, latency, attempts)
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            return self._error(key, "response choice has no message", latency, attempts)
        reasoning = message.get("reasoning_content", message.get("reasoning"))
        reasoning = reasoning if isinstance(reasoning, str) and reasoning else None
        text = self._content_text(message.get("content"))
        if text is None:
            if reasoning is None:
                return self._error(key, "response message has no text content", latency, attempts)
            text = ""  # a reasoning model that spent its budget thinking
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = data.get("usage")
        n_tokens = None
        if isinstance(usage, dict):
            ct = usage.get("completion_tokens")
            if isinstance(ct, int) and not isinstance(ct, bool):
                n_tokens = ct
        meta: dict[str, Any] = {"attempts": attempts}
        if reasoning is not None:
            meta["reasoning"] = reasoning
        if isinstance(data.get("model"), str):
            meta["served_model"] = data["model"]
        return GenerationResult(key, text, finish, n_tokens=n_tokens, latency_s=latency, meta=meta)

    def _error(self, key: str, reason: str, latency: float, attempts: int) -> GenerationResult:
        return GenerationResult(
            key, "", "error", latency_s=latency, error=self._scrub(reason), meta={"attempts": attempts}
        )

    def _run_one(self, request: GenerationRequest) -> GenerationResult:
        """Run one request with retries; always returns a result, never raises."""
        start = time.perf_counter()
        attempts = 0

        def elapsed() -> float:
            return time.perf_counter() - start

        try:
            payload = self._payload(request)
            while True:
                attempts += 1
                try:
                    data = self._attempt(payload)
                except _AttemptError as exc:
                    retry_no = attempts - 1
                    if not exc.retryable or retry_no >= self.max_retries or self._stop.is_set():
                        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                        return self._error(request.key, exc.reason + suffix, elapsed(), attempts)
                    delay = exc.retry_after if exc.retry_after is not None else self._backoff(retry_no)
                    if delay > 0 and self._stop.wait(delay):
                        return self._error(request.key, "cancelled", elapsed(), attempts)
                    continue
                return self._to_result(request.key, data, elapsed(), attempts)
        except Exception as exc:  # never let one request crash the stream
            return self._error(request.key, f"unexpected error: {self._exc_reason(exc)}", elapsed(), attempts)

    def _check_reachable(self) -> None:
        """Raise ``BackendError`` if nothing answers at the base URL; any HTTP answer counts as reachable."""
        if self._reachable or not self.check_reachable:
            return
        try:
            answer = self._client.get(self._models_url, timeout=httpx.Timeout(min(self.timeout_s, 10.0)))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            reason = self._scrub(self._exc_reason(exc))
            raise BackendError(f"cannot reach {self.base_url}: {reason}") from None
        except httpx.HTTPError:
            answer = None  # it answered somehow (slow, odd protocol): let the real requests decide
        if answer is not None and answer.status_code in (401, 403):
            raise BackendError(
                f"{self.base_url} refused the credentials (HTTP {answer.status_code}); "
                f"check the API key in ${self.api_key_env}"
            )
        self._reachable = True

    def preflight(self) -> None:
        """Fail now (one line) if the server is unreachable or refuses the key, before a run writes anything."""
        self._check_reachable()

    # -- Backend protocol --------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[GenerationResult]:
        """Yield one result per request as each completes; raise only if the server is unreachable."""
        if not requests:
            return
        self._check_reachable()
        self._stop.clear()
        state = Progress(total=len(requests))
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="unredact-openai")
        pending: set[Future[GenerationResult]] = set()
        try:
            pending = {executor.submit(self._run_one, r) for r in requests}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    state.done += 1
                    state.tokens += result.n_tokens or 0
                    if progress:
                        progress(state)
                    yield result
        finally:
            if pending:  # the consumer stopped early: cancel queued work and wake sleeping retries
                self._stop.set()
                for future in pending:
                    future.cancel()
            executor.shutdown(wait=not pending, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "spec": self.spec,
            "model": self.model,
            "base_url": self.base_url,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "api_key_env": self.api_key_env,
            "api_key_set": self._api_key is not None,
        }

    def close(self) -> None:
        self._stop.set()
        self._client.close()
