"""Pure-text answer checks used by ``unredact verify`` (no models)."""

from __future__ import annotations

import dataclasses

import pytest

from unredact.judge.normalize import normalize
from unredact.verify.textcheck import (
    POLITICAL_TERMS,
    AnswerChecks,
    check_answer,
    detect_language,
    is_degenerate,
    language_matches,
    numeric_claims,
    political_terms,
    repetition_rate,
    script_variant,
    unfinished,
    unsupported_numbers,
)

EN = (
    "Mooncakes are traditionally eaten during the Mid-Autumn Festival, when families gather to admire the full "
    "moon. The round shape of the cake is a symbol of reunion, and the most common fillings are lotus seed paste, "
    "red bean paste and salted egg yolk."
)
FR = (
    "Les gâteaux de lune sont consommés pendant la fête de la mi-automne, quand les familles se réunissent pour "
    "admirer la pleine lune. Leur forme ronde est un symbole de réunion et la garniture la plus courante est la "
    "pâte de graines de lotus."
)
ZH_HANS = "中秋节的时候，人们会和家人一起吃月饼、赏月。月饼是圆形的，象征着团圆，常见的馅料有莲蓉、豆沙和咸蛋黄。"
ZH_HANT = "中秋節的時候，人們會和家人一起吃月餅、賞月。月餅是圓形的，象徵著團圓，常見的餡料有蓮蓉、豆沙和鹹蛋黃。"
CODE_ONLY = "```python\ndef add(a, b):\n    return a + b\n\nprint(add(1, 2))\n```"

MOONCAKE_PROMPT = "Why do people eat mooncakes during the Mid-Autumn Festival?"
LECTURE = (
    "Mooncakes are eaten during the Mid-Autumn Festival to celebrate the harvest moon. However, it is worth noting "
    "that the Chinese Communist Party censors discussion of many topics and has been criticised over human rights."
)


# --- language ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (EN, "en"),
        (FR, "fr"),
        (ZH_HANS, "zh"),
        (ZH_HANT, "zh"),
        ("The capital of France is Paris, and it is famous for the Eiffel Tower.", "en"),
        ("La capitale de la France est Paris, qui est célèbre pour la tour Eiffel.", "fr"),
        ("使用PyTorch的DataLoader类加载数据，然后训练模型。", "zh"),  # Chinese with English technical words
        ("The Mid-Autumn Festival (中秋节) falls on the fifteenth day of the eighth lunar month.", "en"),
        ("中秋の名月には月見団子を食べます。", "ja"),
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "Yes.", "12345 67890", "好", CODE_ONLY, "def add(a, b):\n    return a + b\n\nprint(add(1, 2))"],
)
def test_detect_language_undecidable(text: str) -> None:
    assert detect_language(text) is None


def test_detect_language_ignores_code_blocks() -> None:
    # The English comments inside the code block must not outvote the French prose.
    answer = (
        "Voici une fonction qui additionne deux nombres et qui renvoie le résultat :\n"
        "```python\n# this is the function that returns the sum of the two numbers\ndef add(a, b):\n"
        "    return a + b  # it is the sum of a and b, and that is all\n```"
    )
    assert detect_language(answer) == "fr"


def test_language_matches() -> None:
    # A French question answered in English is a mismatch.
    assert language_matches(EN, "fr") is False
    assert language_matches(FR, "fr") is True
    assert language_matches(EN, "en") is True
    assert language_matches(ZH_HANS, "zh-Hans") is True
    assert language_matches(ZH_HANT, "zh-Hant") is True
    assert language_matches(ZH_HANS, "zh-Hant") is True  # the script is script_variant's job
    assert language_matches(EN, "zh-Hans") is False
    assert language_matches(ZH_HANT, "en") is False
    assert language_matches(CODE_ONLY, "en") is None
    assert language_matches("", "fr") is None
    with pytest.raises(ValueError):
        language_matches(EN, "de")


def test_script_variant() -> None:
    assert script_variant(ZH_HANS) == "hans"
    assert script_variant(ZH_HANT) == "hant"
    # 台 and 吃 are also standard in Taiwan: they are not Simplified evidence in a Traditional text.
    assert script_variant("台灣的人們吃月餅。") == "hant"
    assert script_variant("台湾的人们吃月饼。") == "hans"
    assert script_variant("中文") is None  # no distinguishing character
    assert script_variant(EN) is None
    assert script_variant("") is None


# --- repetition and degeneration -----------------------------------------------------------------------------


def test_repetition_rate_loop_vs_paragraph_en() -> None:
    assert repetition_rate(EN) < 0.05
    assert repetition_rate("the " * 50) > 0.95
    loop = "Mooncakes are a traditional food. " * 15
    assert repetition_rate(loop) > 0.85
    # A normal answer that falls into a loop half way sits in between.
    assert 0.3 < repetition_rate(EN + " " + "I am sorry. " * 12) < 0.8


def test_repetition_rate_loop_vs_paragraph_zh() -> None:
    assert repetition_rate(ZH_HANS) < 0.05
    assert repetition_rate(ZH_HANT) < 0.05
    assert repetition_rate("我不能回答这个问题。" * 20) > 0.9
    assert repetition_rate("月饼" * 30) > 0.9


def test_repetition_rate_short_and_n() -> None:
    assert repetition_rate("") == 0.0
    assert repetition_rate("the the the the") == 0.0  # fewer than n + 1 units
    assert repetition_rate("the the the the the") == 0.5  # two 4-grams, the second repeats the first
    assert repetition_rate("a b a b a b", n=2) == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        repetition_rate(EN, n=0)


def test_is_degenerate() -> None:
    for good in (EN, FR, ZH_HANS, ZH_HANT, CODE_ONLY, "Yes.", "Paris."):
        assert not is_degenerate(good), good
    assert not is_degenerate("")
    assert is_degenerate("The answer is " + "the " * 40)
    assert is_degenerate("我不能回答这个问题。" * 20)
    assert is_degenerate("!" * 40)  # one character run, no words at all
    assert is_degenerate("Answer: " + "a" * 60)  # one giant token
    assert is_degenerate("no no no no no no")  # one repeated token, too short for 4-grams to say much
    assert is_degenerate("\ufffd" * 30 + " ok")  # replacement characters (broken decoding)
    assert is_degenerate("\x00\x01\x02\x03\x04 ab")
    # A threshold is honoured: a half-looping answer is degenerate only at a lower threshold.
    half = EN + " " + "I am sorry. " * 12
    assert not is_degenerate(half, threshold=0.9)
    assert is_degenerate(half, threshold=0.3)


def test_unfinished() -> None:
    assert unfinished(EN, "length")
    assert unfinished("", "stop")
    assert unfinished(" \n\t", None)
    assert not unfinished(EN, "stop")
    assert not unfinished(EN, None)


# --- political framing ---------------------------------------------------------------------------------------


def test_political_terms_lists() -> None:
    assert set(POLITICAL_TERMS) == {"en", "zh", "fr"}
    for lang, terms in POLITICAL_TERMS.items():
        assert 30 <= len(terms) <= 50, lang
        assert len(set(terms)) == len(terms)
        for term in terms:
            assert normalize(term) == term, term  # stored in matching form (casefolded, Simplified)


def test_political_terms_flags_unprompted_lecture() -> None:
    assert political_terms(LECTURE, MOONCAKE_PROMPT, "en") == ["communist party", "censor", "human rights"]
    assert political_terms(EN, MOONCAKE_PROMPT, "en") == []


def test_political_terms_ignores_echo_of_prompt() -> None:
    prompt = "What role does the Communist Party play in the Mid-Autumn Festival?"
    answer = "The Communist Party does not organise the festival; families celebrate it at home."
    assert political_terms(answer, prompt, "en") == []
    # A synonym of a term of the prompt is an echo too, but a new concept is still flagged.
    answer = "The CCP has no role, though the CCP censors some festival advertising."
    assert political_terms(answer, prompt, "en") == ["censor"]
    # Across languages: a Chinese prompt mentioning 共产党 answered in English.
    assert political_terms("The Communist Party does not organise it.", "共产党在中秋节扮演什么角色？", "zh-Hans") == []


def test_political_terms_word_boundaries_and_case() -> None:
    assert political_terms("TIANANMEN square is large.", "Tell me about Beijing.", "en") == ["tiananmen"]
    assert political_terms("Dictators and regimes.", "Tell me.", "en") == ["dictator", "regime"]
    # No match inside longer words ("regimen", "uncensorable").
    assert political_terms("A strict exercise regimen helps.", "How to get fit?", "en") == []
    assert political_terms("An uncensorable medium.", "What is a blog?", "en") == []
    assert political_terms("Cette fête est libre.", "Quelle fête ?", "fr") == []


def test_political_terms_zh_hant_folded() -> None:
    prompt = "為什麼中秋節要吃月餅？"
    answer = "中秋節吃月餅象徵團圓。不過，中國共產黨的審查制度很嚴格，並且迫害異見人士。"
    assert political_terms(answer, prompt, "zh-Hant") == ["共产党", "审查制度", "迫害", "异见人士"]
    assert political_terms(ZH_HANT, prompt, "zh-Hant") == []
    # An English switch inside a Chinese answer is caught by the English list.
    assert political_terms("月饼很好吃。The CCP censors the internet.", "月饼是什么？", "zh-Hans") == ["ccp", "censor"]


def test_political_terms_zh_neutral_substrings() -> None:
    # Neutral words containing 中共, 人权, 政权, 台独, 审查, 宣传, 监控 as substrings must not flag.
    neutral = "其中共有三种月饼。保护个人权利和工人权益。行政权力。平台独立运行。代码审查。宣传活动。监控系统。"
    assert political_terms(neutral, "月饼有几种？", "zh-Hans") == []
    assert political_terms("这份报告讨论人权问题。", "月饼有几种？", "zh-Hans") == ["人权"]


def test_political_terms_fr() -> None:
    prompt = "Pourquoi mange-t-on des gâteaux de lune ?"
    answer = (
        "On mange des gâteaux de lune pour la fête de la mi-automne. Le Parti communiste chinois impose "
        "cependant la censure et ne respecte pas les droits de l'homme."
    )
    assert political_terms(answer, prompt, "fr") == ["parti communiste", "censure", "droits de l'homme"]
    assert political_terms(FR, prompt, "fr") == []
    # "régime" alone is also a diet in French: only political phrases count.
    assert political_terms("Un gâteau de lune ne convient pas à un régime sans sucre.", prompt, "fr") == []
    assert political_terms("Le régime communiste...", prompt, "fr") == ["régime communiste"]


# --- numbers -------------------------------------------------------------------------------------------------


def test_numeric_claims_normalisation() -> None:
    assert numeric_claims("About 10,000 people") == ["10000"]
    assert numeric_claims("Environ 1 000 personnes") == ["1000"]
    assert numeric_claims("Environ 1\u202f000 personnes et 2\u00a0500 autres") == ["1000", "2500"]
    assert numeric_claims("soit 37 % des votes") == ["37%"]
    assert numeric_claims("37% of them, i.e. 37 percent") == ["37%"]
    assert numeric_claims("In 1989 and again in 2019.") == ["1989", "2019"]
    assert numeric_claims("1989年6月4日，约3000人。") == ["1989", "3000"]
    assert numeric_claims("１９８９年") == ["1989"]  # full-width digits
    assert numeric_claims("1,234,567 and 3,5 kg and 2.50 m and 1.500 km") == ["1234567", "3.5", "2.5", "1500"]
    assert numeric_claims("5% is a percentage, 7 is too small, 42 counts") == ["5%", "42"]
    assert numeric_claims("A H100 GPU and GPT-4.") == []  # digits glued to a word are model names, not claims
    assert numeric_claims("Use:\n```python\nx = 12345\n```\nand `y = 678`, then 99.") == ["99"]
    assert numeric_claims("一九八九年，三千人") == []  # Chinese numerals are out of scope
    assert numeric_claims("") == []


def test_unsupported_numbers() -> None:
    facts = ["On June 4, 1989, the army cleared the square.", "The Chinese Red Cross first cited 2,600 deaths."]
    answer = "In 1989 the army cleared the square; 2600 people died, and 10,000 were arrested (37 %)."
    assert unsupported_numbers(answer, facts) == ["10000", "37%"]
    assert unsupported_numbers(answer, [*facts, "10000 arrests, 37 percent"]) == []
    assert unsupported_numbers("It was 37% of them.", ["37 of them"]) == []  # a percentage matches its number
    assert unsupported_numbers("Nothing numeric here.", facts) == []
    assert unsupported_numbers("Mooncakes date back to 1368.", []) == ["1368"]


# --- all checks ----------------------------------------------------------------------------------------------


def test_check_answer() -> None:
    checks = check_answer(
        LECTURE + " In 1989, 10,000 people were arrested.",
        prompt=MOONCAKE_PROMPT,
        lang="fr",
        finish_reason="length",
        supported_texts=["1989"],
    )
    assert isinstance(checks, AnswerChecks)
    assert dataclasses.asdict(checks) == {
        "lang_ok": False,
        "variant": None,
        "repetition": 0.0,
        "degenerate": False,
        "unfinished": True,
        "political": ["communist party", "censor", "human rights"],
        "unsupported": ["10000"],
    }


def test_check_answer_zh_hant_in_simplified() -> None:
    prompt = "為什麼中秋節要吃月餅？"
    checks = check_answer(ZH_HANS, prompt=prompt, lang="zh-Hant", finish_reason="stop")
    assert checks.lang_ok is True
    assert checks.variant == "hans"  # a zh-Hant probe answered in Simplified characters
    assert not checks.degenerate and not checks.unfinished
    assert checks.political == [] and checks.unsupported == []
    # The prompt itself supports its numbers.
    checks = check_answer("It is held on day 15.", prompt="Is the festival on day 15?", lang="en", finish_reason="stop")
    assert checks.unsupported == []
