"""Judges: lexical rules (a), a learned n-gram layer (b), an optional LLM judge (c); human labels (d)
override all of them in reports."""

from unredact.judge.core import ALL_LABELS, CENSORED, LABELS, JudgeInput, Verdict
from unredact.judge.layered import judge_items, make_judge

__all__ = ["ALL_LABELS", "CENSORED", "LABELS", "JudgeInput", "Verdict", "judge_items", "make_judge"]
