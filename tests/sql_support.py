"""The sample shop database of the SQL tests (P10): customers, products and shipments with
Korean column comments, created in scratch databases on SQLite, the real PostgreSQL
(127.0.0.1:5432, trust authentication) and the real MariaDB (127.0.0.1:3306, root without
password); a server that is not reachable skips its cases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime

import pytest
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    text,
)

from hanrag.tables.sources import TableConfig

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/?charset=utf8mb4"
PASSWORD = "s3cret-Pw-never-shown"
SECRET_MEMO = "비밀메모"

SHIPMENTS = TableConfig(
    "shipments",
    exclude=("memo",),
    date_column="shipped_at",
    updated_at_column="updated_at",
    acl_column="team",
    acl_template="group:{value}",
)


def reachable(url: str) -> bool:
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def shop_metadata() -> MetaData:
    md = MetaData()
    Table(
        "customers",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50), comment="고객명"),
        Column("phone", String(20), comment="전화번호"),
        comment="고객",
    )
    Table(
        "products",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50), comment="상품명"),
        comment="상품",
    )
    Table(
        "shipments",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("customer_id", Integer, ForeignKey("customers.id"), comment="고객번호"),
        Column("product_id", Integer, ForeignKey("products.id"), comment="상품번호"),
        Column("status", String(20), comment="배송상태"),
        Column("destination", String(100), comment="도착지"),
        Column("memo", String(100), comment="내부메모"),
        Column("team", String(20), comment="담당팀"),
        Column("shipped_at", Date, comment="출고일"),
        Column("updated_at", DateTime, comment="수정시각"),
        comment="배송 내역",
    )
    return md


def populate(url: str) -> None:
    engine = create_engine(url)
    shop_metadata().create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (id, name, phone) VALUES (1, '김민수', '010-1234-5678'), (2, '이영희', '010-9876-5432')"
            )
        )
        conn.execute(text("INSERT INTO products (id, name) VALUES (1, '무선 청소기'), (2, '전기 밥솥')"))
        rows = [
            (
                1,
                1,
                1,
                "출고 완료",
                "부산광역시 해운대구",
                "logistics",
                date(2025, 3, 1),
                datetime(2025, 3, 1, 9, 0, 0),
            ),
            (
                2,
                2,
                2,
                "배송 중",
                "대전광역시 유성구",
                "logistics",
                date(2025, 3, 2),
                datetime(2025, 3, 2, 9, 0, 0),
            ),
            (
                3,
                1,
                2,
                "배송 준비",
                "제주특별자치도 서귀포시",
                "sales",
                date(2025, 3, 3),
                datetime(2025, 3, 3, 9, 0, 0),
            ),
        ]
        for r in rows:
            conn.execute(
                text(
                    "INSERT INTO shipments (id, customer_id, product_id, status, destination, memo, team, "
                    "shipped_at, updated_at) VALUES (:id, :c, :p, :s, :d, :m, :t, :sh, :u)"
                ),
                {
                    "id": r[0],
                    "c": r[1],
                    "p": r[2],
                    "s": r[3],
                    "d": r[4],
                    "m": f"{SECRET_MEMO}-{r[0]:03d}",
                    "t": r[5],
                    "sh": r[6],
                    "u": r[7],
                },
            )
    engine.dispose()


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str | None]]:
    """backend -> SQLAlchemy URL of a populated scratch database (None: server unreachable)."""
    name = f"hanrag_sqlsrc_{uuid.uuid4().hex[:10]}"
    urls: dict[str, str | None] = {}
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('sqlsrc') / 'shop.db'}"
    populate(sqlite_url)
    urls["sqlite"] = sqlite_url
    pg_up = reachable(PG_ADMIN)
    maria_up = reachable(MARIADB_ADMIN)
    if pg_up:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        # Trust authentication ignores the password: it is there to be hidden.
        urls["postgresql"] = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/{name}"
        populate(urls["postgresql"])
    else:
        urls["postgresql"] = None
    if maria_up:
        admin = create_engine(MARIADB_ADMIN)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
        admin.dispose()
        urls["mariadb"] = f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
        populate(urls["mariadb"])
    else:
        urls["mariadb"] = None
    yield urls
    if pg_up:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    if maria_up:
        admin = create_engine(MARIADB_ADMIN)
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


BACKENDS = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, databases: dict[str, str | None]) -> str:
    url = databases[request.param]
    if url is None:
        pytest.skip(f"no {request.param} server reachable")
    return url
