"""Company vocabulary: a Kiwi user dictionary, query-time synonyms and stop-words.

Kept as ``vocabulary.json`` in the data directory, written atomically (a temporary file
renamed over it) under an ``flock`` so that concurrent writers never lose a change::

    {"version": 7,
     "words": [{"term": "누리온패스", "tag": "NNP"}],
     "synonyms": [["법카", "법인카드"], ["연차", "연차휴가"]],
     "stopwords": ["관련"]}

Every process of a deployment shares the data directory (the local index lives there
too), so every process sees a change: before each use of the analyser, the active file's
``stat`` is compared with the one last read (at most every ``CHECK_INTERVAL_S``), and a
changed file is read again and its words applied to Kiwi. ``version`` counts the changes.

The words change how text is analysed, so chunks indexed before a word was added keep
their old morphemes until a lexical re-index (:mod:`hanrag.index.relex`); synonyms and
stop-words apply to queries only and need none. Synonyms expand a query's lexical tokens
(BM25 morphemes and character bigrams), never its embedding.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanrag.errors import InvalidInputError
from hanrag.korean import analyzer

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

FILE_NAME = "vocabulary.json"
KINDS = ("words", "synonyms", "stopwords")
# Kiwi tags a user word may take: nouns (kept whole as one search token), roots, foreign
# words, numbers, verb and adjective stems, adverbs.
WORD_TAGS = frozenset({"NNP", "NNG", "NNB", "NR", "XR", "SL", "SH", "SN", "VV", "VA", "MAG"})
CHECK_INTERVAL_S = 0.5
MAX_TERM_CHARS = 100
MAX_TERMS = 100_000
_ASCII = re.compile(r"^[\x00-\x7f]+$")


def clean_term(term: str) -> str:
    cleaned = analyzer.normalize(term)
    if not cleaned:
        raise InvalidInputError("a vocabulary term is empty", code="empty_term", field="term")
    if len(cleaned) > MAX_TERM_CHARS:
        raise InvalidInputError(
            f"the term {cleaned[:20]!r}… is longer than {MAX_TERM_CHARS} characters",
            code="term_too_long",
            field="term",
        )
    return cleaned


def check_tag(tag: str) -> str:
    tag = tag.strip().upper()
    if tag not in WORD_TAGS:
        raise InvalidInputError(
            f"unknown word tag {tag!r} (known: {', '.join(sorted(WORD_TAGS))})",
            code="invalid_tag",
            field="tag",
        )
    return tag


@dataclass(slots=True)
class Vocabulary:
    version: int = 0
    words: dict[str, str] = field(default_factory=dict)  # term -> Kiwi tag
    synonyms: list[list[str]] = field(default_factory=list)  # groups of equivalent terms
    stopwords: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "words": [{"term": t, "tag": tag} for t, tag in sorted(self.words.items())],
            "synonyms": [list(g) for g in self.synonyms],
            "stopwords": sorted(self.stopwords),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        """Checked: a file edited by hand or imported is refused whole when a part is wrong."""
        if not isinstance(data, dict):
            raise InvalidInputError("a vocabulary is a JSON object", code="invalid_vocabulary")
        vocabulary = cls(version=int(data.get("version") or 0))
        words = data.get("words") or []
        for item in words:
            if isinstance(item, str):
                vocabulary.words[clean_term(item)] = "NNP"
            elif isinstance(item, dict) and isinstance(item.get("term"), str):
                vocabulary.words[clean_term(item["term"])] = check_tag(str(item.get("tag") or "NNP"))
            else:
                raise InvalidInputError(f"not a word: {item!r}", code="invalid_vocabulary", field="words")
        for group in data.get("synonyms") or []:
            if not isinstance(group, list) or not all(isinstance(t, str) for t in group):
                raise InvalidInputError(f"not a synonym group: {group!r}", code="invalid_vocabulary")
            vocabulary.add_synonyms([clean_term(t) for t in group])
        for term in data.get("stopwords") or []:
            if not isinstance(term, str):
                raise InvalidInputError(f"not a stop-word: {term!r}", code="invalid_vocabulary")
            vocabulary.add_stopwords([clean_term(term)])
        if len(vocabulary.words) + len(vocabulary.stopwords) + len(vocabulary.synonyms) > MAX_TERMS:
            raise InvalidInputError(f"more than {MAX_TERMS:,} vocabulary entries", code="invalid_vocabulary")
        return vocabulary

    # ------------------------------------------------------------- changes

    def add_words(self, terms: list[str], tag: str = "NNP") -> None:
        tag = check_tag(tag)
        for term in terms:
            self.words[clean_term(term)] = tag

    def remove_words(self, terms: list[str]) -> None:
        for term in terms:
            self.words.pop(clean_term(term), None)

    def add_synonyms(self, terms: list[str]) -> None:
        """One group of equivalent terms; groups sharing a term with it merge into it."""
        merged = list(dict.fromkeys(clean_term(t) for t in terms))
        if len(merged) < 2:
            raise InvalidInputError(
                "a synonym needs at least two terms", code="invalid_synonym", field="terms"
            )
        keys = {t.lower() for t in merged}
        kept: list[list[str]] = []
        for group in self.synonyms:
            if keys & {t.lower() for t in group}:
                merged.extend(t for t in group if t.lower() not in {m.lower() for m in merged})
            else:
                kept.append(group)
        self.synonyms = [*kept, merged]

    def remove_synonyms(self, terms: list[str]) -> None:
        """Take each term out of its group (a group left with one term goes)."""
        gone = {clean_term(t).lower() for t in terms}
        groups = [[t for t in group if t.lower() not in gone] for group in self.synonyms]
        self.synonyms = [g for g in groups if len(g) >= 2]

    def add_stopwords(self, terms: list[str]) -> None:
        self.stopwords = sorted({*self.stopwords, *(clean_term(t).lower() for t in terms)})

    def remove_stopwords(self, terms: list[str]) -> None:
        gone = {clean_term(t).lower() for t in terms}
        self.stopwords = [t for t in self.stopwords if t not in gone]

    # --------------------------------------------------------------- queries

    def expand_query(
        self, text: str, morphemes: list[str], bigrams: list[str]
    ) -> tuple[list[str], list[str]]:
        """A query's lexical tokens with stop-words dropped and synonyms added.

        A synonym group applies when one of its terms is among the query's morphemes or
        appears in its text (a whole word for Latin-script terms, anywhere for Korean ones,
        which take particles); the group's other terms add their morphemes and bigrams.
        """
        if not (self.synonyms or self.stopwords):
            return morphemes, bigrams
        stop = set(self.stopwords)
        if stop:
            morphemes = [m for m in morphemes if m.lower() not in stop]
            words = [w for w in text.split() if analyzer.normalize(w).lower() not in stop]
            bigrams = analyzer.char_bigrams(" ".join(words))
        lowered = analyzer.normalize(text).lower()
        present = {m.lower() for m in morphemes}
        extra_terms: list[str] = []
        for group in self.synonyms:
            if any(_mentions(lowered, present, term) for term in group):
                extra_terms.extend(t for t in group if not _mentions(lowered, present, t))
        if not extra_terms:
            return morphemes, bigrams
        known_m, known_b = set(morphemes), set(bigrams)
        out_m, out_b = list(morphemes), list(bigrams)
        for extra_morphemes, term in zip(
            analyzer.morpheme_tokens_many(extra_terms), extra_terms, strict=True
        ):
            for token in extra_morphemes:
                if token not in known_m and token.lower() not in stop:
                    known_m.add(token)
                    out_m.append(token)
            for gram in analyzer.char_bigrams(term):
                if gram not in known_b:
                    known_b.add(gram)
                    out_b.append(gram)
        return out_m, out_b


def _mentions(lowered_text: str, morphemes: set[str], term: str) -> bool:
    term = term.lower()
    if term in morphemes:
        return True
    if _ASCII.match(term):
        return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", lowered_text) is not None
    return term in lowered_text


class VocabularyFile:
    """The vocabulary of one data directory: read, changed under a lock, written atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME

    def load(self) -> Vocabulary:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Vocabulary()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{self.path} is not valid JSON: {exc}", code="invalid_vocabulary"
            ) from exc
        return Vocabulary.from_dict(data)

    @contextmanager
    def changing(self) -> Iterator[Vocabulary]:
        """Read, let the caller change, write with the version counted up (only if changed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+b") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            vocabulary = self.load()
            before = vocabulary.as_dict()
            yield vocabulary
            if vocabulary.as_dict() != before:
                vocabulary.version = int(before["version"]) + 1
                self._write(vocabulary)
        if _active is not None and _active.file.path == self.path:
            _active.check(force=True)

    def replace(self, vocabulary: Vocabulary) -> Vocabulary:
        """Replace the whole vocabulary (an import); its version follows the stored one."""
        with self.changing() as current:
            current.words = dict(vocabulary.words)
            current.synonyms = [list(g) for g in vocabulary.synonyms]
            current.stopwords = list(vocabulary.stopwords)
        return self.load()

    def _write(self, vocabulary: Vocabulary) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(vocabulary.as_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(temporary, self.path)


class _Active:
    """The vocabulary this process uses, re-read when its file changes."""

    def __init__(self, file: VocabularyFile) -> None:
        self.file = file
        self.vocabulary = Vocabulary()
        self._seen: object = _UNREAD
        self._checked = 0.0
        self._lock = threading.Lock()

    def check(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < CHECK_INTERVAL_S:
            return
        with self._lock:
            self._checked = now
            try:
                st = os.stat(self.file.path)
                seen: object = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                seen = None
            if seen == self._seen and not force:
                return
            try:
                vocabulary = self.file.load() if seen is not None else Vocabulary()
            except InvalidInputError:
                return  # a broken file (edited by hand) leaves the last good vocabulary in use
            self._seen = seen
            self.vocabulary = vocabulary
            analyzer.set_user_words(vocabulary.words.items())


_UNREAD = object()
_active: _Active | None = None


def activate(data_dir: Path) -> None:
    """Use ``data_dir``'s vocabulary in this process (the engine calls it; the file is
    read lazily, at the analyser's next use)."""
    global _active
    path = Path(data_dir) / FILE_NAME
    if _active is not None and _active.file.path == path:
        return
    active = _Active(VocabularyFile(Path(data_dir)))
    _active = active
    analyzer.set_refresh_hook(active.check)


def current() -> Vocabulary:
    """The active vocabulary (an empty one when none is active)."""
    if _active is None:
        return Vocabulary()
    _active.check()
    return _active.vocabulary
