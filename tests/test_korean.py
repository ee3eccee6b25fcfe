"""Kiwi analyser: morpheme tokens, character bigrams, sentence split, normalisation (real Kiwi)."""

from __future__ import annotations

import unicodedata
from concurrent.futures import ThreadPoolExecutor

import pytest

from hanrag.korean.analyzer import (
    char_bigrams,
    kiwi,
    morpheme_tokens,
    morpheme_tokens_many,
    normalize,
    sentences,
)

# ------------------------------------------------------------------ morphemes


def test_content_words_kept_particles_and_endings_dropped() -> None:
    tokens = morpheme_tokens("직원은 팀장의 승인을 받아 재택근무를 할 수 있다.")
    assert tokens == ["직원", "팀장", "승인", "받다", "재택근무", "하다", "있다"]
    # No particle (은, 의, 을, 를), ending (어, 다) or punctuation survives.
    for function_word in ("은", "의", "을", "를", "어", "다", "."):
        assert function_word not in tokens


def test_verb_and_adjective_stems_get_da() -> None:
    tokens = morpheme_tokens("날씨가 추워서 옷을 입었다. 예쁜 꽃이 피었다")
    # Irregular (춥 -> 추워) and regular conjugations are brought back to the stem + 다.
    assert "춥다" in tokens
    assert "입다" in tokens
    assert "예쁘다" in tokens
    assert "피다" in tokens
    # The bare stem never appears, so a verb cannot collide with a noun of the same form.
    assert "춥" not in tokens and "입" not in tokens
    assert {"날씨", "옷", "꽃"} <= set(tokens)


def test_particles_do_not_change_the_keyword() -> None:
    forms = [morpheme_tokens(text) for text in ("휴가는", "휴가를", "휴가가", "휴가")]
    assert forms == [["휴가"]] * 4


def test_foreign_words_lower_cased_numbers_hanja_and_urls_kept() -> None:
    tokens = morpheme_tokens("USB와 VPN을 쓰는 Python 開發 3개 https://Example.com/Path")
    assert "usb" in tokens and "vpn" in tokens and "python" in tokens
    assert "USB" not in tokens and "Python" not in tokens
    assert "開發" in tokens
    assert "3" in tokens
    assert "쓰다" in tokens
    assert any(t.startswith("https://example.com") for t in tokens)


def test_full_width_latin_is_normalised_before_analysis() -> None:
    assert morpheme_tokens("ＵＳＢ 보안") == morpheme_tokens("USB 보안") == ["usb", "보안"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "...", "!?", "—·…"])
def test_texts_without_content_give_no_tokens(text: str) -> None:
    assert morpheme_tokens(text) == []


def test_batch_form_equals_single_calls() -> None:
    texts = ["연차휴가는 15일이다.", "", "USB 저장장치 쓰기 차단", "비밀번호는 90일마다 변경해야 한다"]
    assert morpheme_tokens_many(texts) == [morpheme_tokens(t) for t in texts]
    assert morpheme_tokens_many([]) == []


def test_analyser_is_one_instance_and_safe_across_threads() -> None:
    assert kiwi() is kiwi()
    texts = [f"직원 {i}번은 연차휴가를 {i}일 사용했다." for i in range(40)]
    expected = [morpheme_tokens(t) for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(morpheme_tokens, texts)) == expected


# -------------------------------------------------------------------- bigrams


def test_char_bigrams_inside_words() -> None:
    assert char_bigrams("연차휴가") == ["연차", "차휴", "휴가"]
    assert char_bigrams("연차휴가 사용") == ["연차", "차휴", "휴가", "사용"]


def test_char_bigrams_one_character_word_kept_whole_and_punctuation_splits() -> None:
    assert char_bigrams("a 연-차") == ["a", "연", "차"]
    assert char_bigrams("(USB)") == ["us", "sb"]


def test_char_bigrams_lower_case_and_nfkc() -> None:
    assert char_bigrams("ＶＰＮ") == char_bigrams("vpn") == ["vp", "pn"]


def test_char_bigrams_of_nothing() -> None:
    assert char_bigrams("") == []
    assert char_bigrams(" ... !!") == []


# ------------------------------------------------------------------ sentences


def test_sentence_split_keeps_original_text() -> None:
    text = "연차휴가는 15일이다. 반차도 쓸 수 있다! 정말인가요? 네 그렇습니다"
    parts = sentences(text)
    assert parts == ["연차휴가는 15일이다.", "반차도 쓸 수 있다!", "정말인가요?", "네 그렇습니다"]
    # Nothing is lost or rewritten: the parts rebuild the text.
    assert " ".join(parts) == text


def test_sentence_split_without_punctuation_uses_korean_endings() -> None:
    parts = sentences("비밀번호는 90일마다 변경해야 한다 최근 5개는 다시 쓸 수 없다")
    assert len(parts) == 2
    assert parts[0].endswith("한다")
    assert parts[1].startswith("최근")


def test_decimal_numbers_and_abbreviations_do_not_split() -> None:
    parts = sentences("버전 1.2는 2025년 3월에 나왔다. 무게는 8.5kg이다.")
    assert parts == ["버전 1.2는 2025년 3월에 나왔다.", "무게는 8.5kg이다."]


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_sentence_split_of_blank_text(text: str) -> None:
    assert sentences(text) == []


# -------------------------------------------------------------- normalisation


def test_normalize_nfkc_and_whitespace() -> None:
    assert normalize("  ＵＳＢ\u3000 보안\t\n정책  ") == "USB 보안 정책"
    # Half-width katakana become full-width, compatibility jamo become conjoining jamo.
    assert normalize("ﾊﾝ") == "ハン"
    assert normalize("ㄱ") == unicodedata.normalize("NFKC", "ㄱ") != "ㄱ"


def test_normalize_keeps_composed_hangul() -> None:
    decomposed = unicodedata.normalize("NFD", "한국어")
    assert decomposed != "한국어"
    assert normalize(decomposed) == "한국어"
    assert normalize("") == ""
