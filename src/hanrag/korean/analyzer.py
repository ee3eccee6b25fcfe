"""Kiwi wrapper: one analyser per process, loaded lazily and thread-safely.

Gives the two lexical views the index uses — Kiwi morpheme tokens (content words
and verb/adjective stems) and character bigrams — plus Kiwi sentence splitting.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiwipiepy import Kiwi

# Morpheme tags that carry meaning for keyword search. Nouns (common, proper,
# numerals), roots, foreign words, hanja and numbers are kept as they are;
# verb/adjective stems get "다" so that "먹" (eat) never collides with a noun.
# Pronouns (NP: 무엇, 누구, 그것 ...) are left out: they say what is asked, not about what.
_NOUN_TAGS = frozenset({"NNG", "NNP", "NR", "XR", "SL", "SH", "SN"})
_STEM_TAGS = frozenset({"VV", "VA", "VV-R", "VA-R", "VV-I", "VA-I"})
_WEB_TAG_PREFIX = "W_"  # URLs, e-mail addresses, hashtags, mentions
_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)

_load_lock = threading.Lock()
# Kiwi's analysis calls are serialised: one analyser is shared by every thread
# and a query needs well under a millisecond, so contention is negligible.
_lock = threading.Lock()
_kiwi: Kiwi | None = None
# The company dictionary (:mod:`hanrag.korean.vocabulary`): (word, tag) pairs given to Kiwi,
# the generation counted up at each change (caches of analysed text key on it), and the
# hook that checks, cheaply, whether the dictionary changed in another process.
_user_words: tuple[tuple[str, str], ...] = ()
_generation = 0
_refresh_hook: Callable[[], None] | None = None


def _new_kiwi(words: Iterable[tuple[str, str]]) -> Kiwi:
    from kiwipiepy import Kiwi

    analyser = Kiwi()
    for word, tag in words:
        analyser.add_user_word(word, tag, 0.0)
    return analyser


def kiwi() -> Kiwi:
    """The process-wide Kiwi instance (about 1.5 s and 100 MB to load), with the company
    dictionary applied."""
    global _kiwi
    if _refresh_hook is not None:
        _refresh_hook()
    if _kiwi is None:
        with _load_lock:
            if _kiwi is None:
                _kiwi = _new_kiwi(_user_words)
    return _kiwi


def set_refresh_hook(hook: Callable[[], None] | None) -> None:
    """Called before each use of the analyser (it must not call :func:`kiwi` itself)."""
    global _refresh_hook
    _refresh_hook = hook


def set_user_words(words: Iterable[tuple[str, str]]) -> bool:
    """Make Kiwi's user dictionary exactly ``words`` ((word, tag) pairs); True if it changed.

    New words are added to the loaded analyser; a removed word (or a changed tag) needs a
    fresh analyser, since Kiwi cannot forget a word: it is built, then swapped in.
    """
    global _kiwi, _user_words, _generation
    wanted = tuple(sorted(set(words)))
    with _load_lock:
        if wanted == _user_words:
            return False
        if _kiwi is not None:
            added = set(wanted) - set(_user_words)
            if set(_user_words) <= set(wanted):
                with _lock:
                    for word, tag in sorted(added):
                        _kiwi.add_user_word(word, tag, 0.0)
            else:
                fresh = _new_kiwi(wanted)
                with _lock:
                    _kiwi = fresh
        _user_words = wanted
        _generation += 1
    return True


def dictionary_generation() -> int:
    """Counted up whenever the user dictionary changes: a cache of analysed text keyed
    on it (or cleared when it moves) never serves an analysis made with an older one."""
    return _generation


def normalize(text: str) -> str:
    """NFKC (full-width forms, compatibility jamo) and collapsed whitespace."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def require_text(value: str | None, *, field: str, max_chars: int) -> str:
    """Normalised non-empty text of at most ``max_chars`` characters.

    Errors name the field: ``empty_<field>`` and ``<field>_too_long``.
    """
    from hanrag.errors import InvalidInputError

    cleaned = normalize(value or "")
    if not cleaned:
        raise InvalidInputError(f"the {field} is empty", code=f"empty_{field}", field=field)
    if len(cleaned) > max_chars:
        raise InvalidInputError(
            f"the {field} has {len(cleaned)} characters; the limit is {max_chars}",
            code=f"{field}_too_long",
            field=field,
        )
    return cleaned


def _content_forms(tokens: Iterable[object]) -> list[str]:
    out: list[str] = []
    for token in tokens:
        tag: str = token.tag  # type: ignore[attr-defined]
        form: str = token.form  # type: ignore[attr-defined]
        if tag in _NOUN_TAGS:
            out.append(form.lower() if tag == "SL" else form)
        elif tag in _STEM_TAGS:
            out.append(form + "다")
        elif tag.startswith(_WEB_TAG_PREFIX):
            out.append(form.lower())
    return out


def morpheme_tokens(text: str) -> list[str]:
    """Kiwi content morphemes of one text, for BM25."""
    text = normalize(text)
    if not text:
        return []
    analyser = kiwi()
    with _lock:
        tokens = analyser.tokenize(text)
    return _content_forms(tokens)


def morpheme_tokens_many(texts: list[str]) -> list[list[str]]:
    """Batch form of :func:`morpheme_tokens` (Kiwi analyses a batch faster)."""
    normalized = [normalize(t) for t in texts]
    analyser = kiwi()
    with _lock:
        analysed = list(analyser.tokenize(normalized)) if normalized else []
    return [_content_forms(tokens) for tokens in analysed]


def char_bigrams(text: str) -> list[str]:
    """Character bigrams inside each word; a one-character word is kept whole.

    A second lexical view that is robust where morpheme analysis splits or joins
    differently in the question and the passage (compounds, names, spacing).
    """
    out: list[str] = []
    for word in _NON_WORD.split(unicodedata.normalize("NFKC", text).lower()):
        if not word:
            continue
        if len(word) == 1:
            out.append(word)
            continue
        out.extend(word[i : i + 2] for i in range(len(word) - 1))
    return out


def sentences(text: str) -> list[str]:
    """Kiwi sentence split; keeps the original characters of each sentence."""
    text = text.strip()
    if not text:
        return []
    analyser = kiwi()
    with _lock:
        parts = analyser.split_into_sents(text)
    return [p.text.strip() for p in parts if p.text.strip()]


def tagged(text: str) -> list[tuple[str, str]]:
    """(form, tag) pairs of Kiwi's analysis, for callers that need the tags."""
    text = normalize(text)
    if not text:
        return []
    analyser = kiwi()
    with _lock:
        tokens = analyser.tokenize(text)
    return [(t.form, t.tag) for t in tokens]
