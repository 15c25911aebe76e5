"""Text normalisation for matching: width/compatibility folding (NFKC), case folding, Traditional ->
Simplified Chinese, unified quotes and whitespace."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "«": '"', "»": '"', "\u00a0": " "})
_SPACES = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@lru_cache(maxsize=1)
def _t2s():  # type: ignore[no-untyped-def]
    from opencc import OpenCC

    return OpenCC("t2s")


def normalize(text: str) -> str:
    """The form in which markers and facts are matched (apply to both sides)."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    if _CJK.search(text):
        text = _t2s().convert(text)
    return _SPACES.sub(" ", text).strip()


def cjk_ratio(text: str) -> float:
    """Share of CJK ideographs among the letters of ``text``."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if _CJK.match(c)) / len(letters)


def word_count(text: str) -> int:
    """Words for alphabetic text; CJK ideographs count as 0.6 word each (about two per word)."""
    cjk = len(_CJK.findall(text))
    latin = len(re.findall(r"[^\W\d_]+", _CJK.sub(" ", text)))
    return latin + round(cjk * 0.6)
