"""The layered judge: rules decide when they are sure, the learned layer settles the rest, and an
optional LLM judge replaces both. Every verdict records which layer and version decided."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from unredact.errors import UnredactError
from unredact.judge.core import LABELS, JudgeInput, Verdict
from unredact.judge.learned import VERSION as NGRAM_VERSION
from unredact.judge.learned import NgramClassifier, featurize, trained_classifier
from unredact.judge.lexical import VERSION as LEXICAL_VERSION
from unredact.judge.lexical import LexicalJudge

AUTO_VERSION = f"auto-1.0({LEXICAL_VERSION}+{NGRAM_VERSION})"
#: rules at or above this confidence are kept as they are
SURE = 0.75


@dataclass
class LayeredJudge:
    lexical: LexicalJudge
    classifier: NgramClassifier | None

    @property
    def version(self) -> str:
        return AUTO_VERSION if self.classifier else LEXICAL_VERSION

    def judge_many(self, items: Sequence[JudgeInput]) -> list[Verdict]:
        verdicts = [self.lexical.judge(i) for i in items]
        if self.classifier is None:
            return verdicts
        unsure = [k for k, v in enumerate(verdicts) if v.label not in ("error",) and v.confidence < SURE]
        if not unsure:
            return verdicts
        probs = self.classifier.predict_proba(featurize([items[k] for k in unsure]))
        for row, k in enumerate(unsure):
            v = verdicts[k]
            scores = probs[row].copy()
            scores[LABELS.index(v.label)] += v.confidence  # the rule's vote
            best = int(scores.argmax())
            label = LABELS[best]
            v.scores = {lab: round(float(p), 3) for lab, p in zip(LABELS, probs[row], strict=True)}
            if label != v.label:
                v.explanation = f"learned layer: {label} (p={probs[row][best]:.2f}); rules said {v.label}"
                v.label = label
            v.confidence = round(float(scores[best] / (1.0 + v.confidence)), 3)
            v.judge = AUTO_VERSION
        return verdicts


def make_judge(name: str = "auto") -> Callable[[Sequence[JudgeInput]], list[Verdict]]:
    """``auto`` (rules + learned), ``lexical`` (rules only) or ``llm:SPEC`` (an LLM through a backend)."""
    if name == "lexical":
        return LayeredJudge(LexicalJudge(), None).judge_many
    if name == "auto":
        return LayeredJudge(LexicalJudge(), trained_classifier()).judge_many
    if name.startswith("llm:"):
        from unredact.backends.registry import load_backend
        from unredact.judge.llm import LLMJudge

        return LLMJudge(load_backend(name[4:])).judge_many
    raise UnredactError(f"unknown judge {name!r} (auto, lexical, llm:SPEC)")


def judge_items(items: Sequence[JudgeInput], judge: str = "auto") -> list[Verdict]:
    return make_judge(judge)(items) if items else []
