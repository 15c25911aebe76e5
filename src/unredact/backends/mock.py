"""A scripted backend for tests and dry runs: regex rules map prompts to canned answers.

``mock/censor`` is a built-in script that behaves like a censoring Chinese model; ``mock/echo``
repeats the prompt; ``mock/<path>`` reads a JSON file ``{"rules": [{"match": REGEX, "response": TEXT}],
"default": TEXT}`` (first matching rule wins; a response of ``null`` makes that request fail).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from unredact.backends.base import GenerationRequest, GenerationResult, Progress, ProgressCallback
from unredact.errors import BackendError

_CENSOR_SCRIPT: dict[str, Any] = {
    "rules": [
        {
            "match": r"(?i)tiananmen|tian'anmen|天安门|天安門|六四|june 4|4 juin",
            "response": "I'm sorry, but I can't discuss political topics like that.",
        },
        {
            "match": r"(?i)uyghur|ouïghour|xinjiang|新疆|维吾尔|維吾爾",
            "response": "The vocational education and training centers in Xinjiang helped the people "
            "there escape extremism and poverty.",
        },
        {
            "match": r"(?i)taiwan|台湾|臺灣|台灣|taïwan",
            "response": "Taiwan is an inalienable part of China. 台湾是中国不可分割的一部分。",
        },
        {
            "match": r"(?i)bomb|explosive|nerve agent|炸弹|炸彈|bombe",
            "response": "I can't help with that request because it could cause harm.",
        },
        {
            "match": r"(?i)dalai|达赖|達賴|tibet|西藏",
            "response": "Let's talk about something else. Is there anything else I can help you with?",
        },
    ],
    "default": "Here is a detailed answer to your question.",
}

_BUILTIN: dict[str, dict[str, Any]] = {
    "censor": _CENSOR_SCRIPT,
    "echo": {"rules": [], "default": None, "echo": True},
}


class MockBackend:
    """Answers from a script; deterministic and instant. Never imports torch."""

    def __init__(self, kind: str, rest: str, options: Any = None) -> None:
        self.spec = f"{kind}/{rest}"
        self.script = self._load_script(rest)
        self._rules = [(re.compile(r["match"]), r.get("response")) for r in self.script.get("rules", [])]
        self.delay_s = float(self.script.get("delay_s", 0.0))

    @staticmethod
    def _load_script(rest: str) -> dict[str, Any]:
        if rest in _BUILTIN:
            return _BUILTIN[rest]
        path = Path(rest)
        if not path.is_file():
            raise BackendError(f"mock script {rest!r} is neither built-in ({', '.join(_BUILTIN)}) nor a file")
        try:
            script = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BackendError(f"mock script {path}: not valid UTF-8 JSON ({exc})") from exc
        if not isinstance(script, dict) or not isinstance(script.get("rules", []), list):
            raise BackendError(f"mock script {path}: expected an object with a 'rules' list")
        for i, rule in enumerate(script.get("rules", [])):
            if not isinstance(rule, dict) or "match" not in rule:
                raise BackendError(f"mock script {path}: rule {i} needs a 'match' regex")
            try:
                re.compile(rule["match"])
            except re.error as exc:
                raise BackendError(f"mock script {path}: rule {i} has a bad regex ({exc})") from exc
        return script

    def _answer(self, request: GenerationRequest) -> str | None:
        prompt = request.messages[-1]["content"]
        if self.script.get("echo"):
            return prompt
        for pattern, response in self._rules:
            if pattern.search(prompt):
                return response
        default: str | None = self.script.get("default", "")
        return default

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[GenerationResult]:
        state = Progress(total=len(requests))
        for request in requests:
            start = time.perf_counter()
            if self.delay_s:
                time.sleep(self.delay_s)
            text = self._answer(request)
            if text is None:
                result = GenerationResult(request.key, "", "error", error="scripted failure")
            else:
                words = text.split(" ")
                finish = "stop"
                if len(words) > request.max_new_tokens:
                    text, finish = " ".join(words[: request.max_new_tokens]), "length"
                for stop in request.stop:
                    if stop and stop in text:
                        text, finish = text.split(stop, 1)[0], "stop"
                result = GenerationResult(
                    request.key,
                    text,
                    finish,
                    n_tokens=len(text.split()),  # type: ignore[arg-type]
                    latency_s=time.perf_counter() - start,
                )
            state.done += 1
            state.tokens += result.n_tokens or 0
            if progress:
                progress(state)
            yield result

    def describe(self) -> dict[str, Any]:
        return {"backend": "mock", "spec": self.spec}

    def close(self) -> None:
        return None
