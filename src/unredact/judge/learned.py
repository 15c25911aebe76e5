"""Layer (b): a learned classifier over hashed character n-grams plus the lexical features.

Character n-grams work the same in Chinese, French and English (no tokenizer, no download). The model
is a multinomial logistic regression trained with numpy on the bundled labelled set's ``tune`` split
(never on ``heldout``), in about a second, deterministically.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from unredact.judge.core import LABELS, JudgeInput
from unredact.judge.lexical import extract
from unredact.judge.normalize import normalize

VERSION = "ngram-1.0"
N_HASH = 1 << 14


def labelled_path() -> Path:
    return Path(str(resources.files("unredact.judge") / "data" / "labelled.jsonl"))


def load_labelled(path: Path | None = None, split: str | None = None) -> list[dict[str, object]]:
    path = path or labelled_path()
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


def _ngrams(text: str) -> list[str]:
    grams = []
    for n in (2, 3, 4):
        grams.extend(text[i : i + n] for i in range(max(0, len(text) - n + 1)))
    return grams


def featurize(items: Sequence[JudgeInput]) -> np.ndarray:
    """Rows of [hashed n-gram tf (L2-normalised) | dense lexical features]."""
    dense_dim = len(extract(items[0]).dense()) if items else 10
    x = np.zeros((len(items), N_HASH + dense_dim), dtype=np.float32)
    for row, item in enumerate(items):
        text = normalize(item.response)[:1500]
        for g in _ngrams(text):
            x[row, zlib.crc32(g.encode("utf-8")) % N_HASH] += 1.0
        norm = np.linalg.norm(x[row, :N_HASH])
        if norm:
            x[row, :N_HASH] /= norm
        x[row, N_HASH:] = extract(item).dense()
    return x


class NgramClassifier:
    """Softmax regression with L2 penalty, full-batch gradient descent."""

    def __init__(self, l2: float = 1e-3, epochs: int = 300, lr: float = 2.0) -> None:
        self.l2, self.epochs, self.lr = l2, epochs, lr
        self.w: np.ndarray | None = None
        self.b: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> NgramClassifier:
        n, d = x.shape
        k = len(LABELS)
        self.w = np.zeros((d, k), dtype=np.float32)
        self.b = np.zeros(k, dtype=np.float32)
        onehot = np.eye(k, dtype=np.float32)[y]
        counts = onehot.sum(0) + 1.0
        weights = (n / (k * counts))[y][:, None]  # balance classes
        for _ in range(self.epochs):
            p = self._softmax(x @ self.w + self.b)
            grad = (p - onehot) * weights / n
            self.w -= self.lr * (x.T @ grad + self.l2 * self.w)
            self.b -= self.lr * grad.sum(0)
        return self

    @staticmethod
    def _softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.w is None or self.b is None:
            raise RuntimeError("classifier is not trained")
        return self._softmax(x @ self.w + self.b)


def inputs_from_labelled(rows: Sequence[dict[str, object]]) -> list[JudgeInput]:
    return [JudgeInput.from_record(dict(r)) for r in rows]


_CACHE: dict[str, NgramClassifier] = {}


def trained_classifier(path: Path | None = None) -> NgramClassifier | None:
    """The classifier trained on the tune split (cached per data file content); None without data."""
    path = path or labelled_path()
    if not path.exists():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest not in _CACHE:
        rows = [r for r in load_labelled(path, "tune") if r.get("label") in LABELS]
        if len(rows) < 20:
            return None
        x = featurize(inputs_from_labelled(rows))
        y = np.array([LABELS.index(str(r["label"])) for r in rows])
        _CACHE[digest] = NgramClassifier().fit(x, y)
    return _CACHE[digest]
