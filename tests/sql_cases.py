"""SQL validator cases (issue P10): 30 Korean table questions with correct SQL, 30 refused strings.

Shared by tests/test_sql_guard.py and bench/sql_validator.py. The accepted SQL is written for
SQLite (the tests run it against an in-memory database with ``SCHEMA_DDL``).
"""

from __future__ import annotations

from typing import NamedTuple

ALLOWED: dict[str, set[str]] = {
    "shipments": {"id", "shipped_at", "product_id", "customer_id", "quantity", "hazmat_class", "region"},
    "products": {"id", "name", "category", "unit_price"},
    "customers": {"id", "name", "region", "tier"},
}

# The real tables hold more than the caller may see (secret columns, a secret table).
SCHEMA_DDL = """
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, unit_price REAL, cost REAL);
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, region TEXT, tier TEXT, phone TEXT);
CREATE TABLE shipments (
  id INTEGER PRIMARY KEY, shipped_at TEXT, product_id INTEGER REFERENCES products(id),
  customer_id INTEGER REFERENCES customers(id), quantity INTEGER, hazmat_class TEXT, region TEXT
);
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, password_hash TEXT);
INSERT INTO products VALUES (1, '리튬 배터리', '위험물', 12000, 8000), (2, '종이 상자', '포장재', 500, 200),
  (3, '페인트', '위험물', 30000, 21000);
INSERT INTO customers VALUES (1, '한빛물산', '서울', 'gold', '010'), (2, '부산상사', '부산', 'silver', '011');
INSERT INTO shipments VALUES
  (1, '2024-01-15', 1, 1, 10, '9', '서울'), (2, '2024-01-20', 2, 2, 100, NULL, '부산'),
  (3, '2024-02-03', 3, 1, 5, '3', '서울'), (4, '2024-03-11', 1, 2, 20, '9', '부산');
"""


class Accepted(NamedTuple):
    question: str
    sql: str


class Refused(NamedTuple):
    sql: str
    code: str
    dialect: str = "sqlite"


ACCEPTED: list[Accepted] = [
    Accepted(
        "월별 출하 건수를 알려줘",
        "SELECT strftime('%Y-%m', shipped_at) AS month, COUNT(*) AS n FROM shipments GROUP BY month ORDER BY month",
    ),
    Accepted(
        "월별 출하 수량 합계는?",
        "SELECT strftime('%Y-%m', shipped_at) AS month, SUM(quantity) AS total FROM shipments GROUP BY 1 ORDER BY 1",
    ),
    Accepted(
        "지역별 평균 출하 수량", "SELECT region, AVG(quantity) AS avg_qty FROM shipments GROUP BY region"
    ),
    Accepted(
        "출하 수량이 가장 많은 제품 상위 5개",
        "SELECT p.name, SUM(s.quantity) AS total FROM shipments s JOIN products p ON p.id = s.product_id GROUP BY p.name ORDER BY total DESC LIMIT 5",
    ),
    Accepted(
        "위험물(hazmat) 출하는 몇 건이야?", "SELECT COUNT(*) FROM shipments WHERE hazmat_class IS NOT NULL"
    ),
    Accepted(
        "위험물 등급별 출하 건수",
        "SELECT hazmat_class, COUNT(*) AS n FROM shipments WHERE hazmat_class IS NOT NULL GROUP BY hazmat_class ORDER BY n DESC",
    ),
    Accepted(
        "2024년 1월 서울 지역 출하 목록",
        "SELECT id, shipped_at, quantity FROM shipments WHERE region = '서울' AND shipped_at >= '2024-01-01' AND shipped_at < '2024-02-01'",
    ),
    Accepted(
        "고객별 총 출하 수량 상위 3곳",
        "SELECT c.name, SUM(s.quantity) AS total FROM customers c JOIN shipments s ON s.customer_id = c.id GROUP BY c.name ORDER BY total DESC LIMIT 3",
    ),
    Accepted(
        "서울과 부산의 출하 수량 비교",
        "SELECT region, SUM(quantity) AS total FROM shipments WHERE region IN ('서울', '부산') GROUP BY region",
    ),
    Accepted(
        "지난달 대비 이번 달 출하 건수 변화",
        "WITH m AS (SELECT strftime('%Y-%m', shipped_at) AS month, COUNT(*) AS n FROM shipments GROUP BY month) SELECT month, n, n - LAG(n) OVER (ORDER BY month) AS diff FROM m ORDER BY month",
    ),
    Accepted(
        "월별 누적 출하 수량 추이",
        "WITH m AS (SELECT strftime('%Y-%m', shipped_at) AS month, SUM(quantity) AS q FROM shipments GROUP BY month) SELECT month, SUM(q) OVER (ORDER BY month) AS cumulative FROM m",
    ),
    Accepted(
        "제품 카테고리별 매출 합계",
        "SELECT p.category, SUM(s.quantity * p.unit_price) AS revenue FROM shipments s JOIN products p ON p.id = s.product_id GROUP BY p.category ORDER BY revenue DESC",
    ),
    Accepted("가장 최근 출하 10건 보여줘", "SELECT * FROM shipments ORDER BY shipped_at DESC LIMIT 10"),
    Accepted(
        "한 번도 출하되지 않은 제품은?",
        "SELECT name FROM products WHERE id NOT IN (SELECT product_id FROM shipments)",
    ),
    Accepted(
        "출하가 있는 고객 이름",
        "SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM shipments s WHERE s.customer_id = c.id)",
    ),
    Accepted(
        "지역별로 출하 수량 순위를 매겨줘",
        "SELECT region, id, quantity, RANK() OVER (PARTITION BY region ORDER BY quantity DESC) AS rnk FROM shipments",
    ),
    Accepted(
        "지역마다 가장 큰 출하 한 건",
        "SELECT region, id, quantity FROM (SELECT region, id, quantity, ROW_NUMBER() OVER (PARTITION BY region ORDER BY quantity DESC) AS rn FROM shipments) t WHERE rn = 1",
    ),
    Accepted(
        "평균보다 많이 출하된 건",
        "SELECT id, quantity FROM shipments WHERE quantity > (SELECT AVG(quantity) FROM shipments)",
    ),
    Accepted(
        "골드 등급 고객의 출하 건수",
        "SELECT COUNT(*) FROM shipments s JOIN customers c ON c.id = s.customer_id WHERE c.tier = 'gold'",
    ),
    Accepted(
        "출하 수량이 50개 이상인 지역",
        "SELECT region, SUM(quantity) AS total FROM shipments GROUP BY region HAVING SUM(quantity) >= 50",
    ),
    Accepted(
        "제품별 최소·최대 출하 수량",
        "SELECT product_id, MIN(quantity) AS min_q, MAX(quantity) AS max_q FROM shipments GROUP BY product_id",
    ),
    Accepted(
        "위험물과 일반 화물의 비율",
        "SELECT CASE WHEN hazmat_class IS NULL THEN '일반' ELSE '위험물' END AS kind, COUNT(*) AS n FROM shipments GROUP BY kind",
    ),
    Accepted(
        "분기별 출하 건수",
        "SELECT (CAST(strftime('%m', shipped_at) AS INTEGER) + 2) / 3 AS quarter, COUNT(*) FROM shipments GROUP BY quarter",
    ),
    Accepted(
        "요일별 출하 건수",
        "SELECT strftime('%w', shipped_at) AS weekday, COUNT(*) FROM shipments GROUP BY weekday ORDER BY weekday",
    ),
    Accepted(
        "'배터리'가 들어간 제품의 출하 합계",
        "SELECT SUM(s.quantity) FROM shipments s JOIN products p ON p.id = s.product_id WHERE p.name LIKE '%배터리%'",
    ),
    Accepted(
        "고객 지역과 출하 지역이 다른 건",
        "SELECT s.id, c.region AS customer_region, s.region FROM shipments s JOIN customers c ON c.id = s.customer_id WHERE c.region <> s.region",
    ),
    Accepted(
        "지역별 출하 수량 평균을 소수 둘째 자리까지",
        "SELECT region, ROUND(AVG(quantity), 2) AS avg_q FROM shipments GROUP BY region",
    ),
    Accepted(
        "서울 또는 부산 고객 목록 (중복 없이)",
        "SELECT name FROM customers WHERE region = '서울' UNION SELECT name FROM customers WHERE region = '부산'",
    ),
    Accepted(
        "위험물 등급이 비어 있으면 '없음'으로 보여줘",
        "SELECT id, COALESCE(hazmat_class, '없음') AS hazmat FROM shipments",
    ),
    Accepted(
        "제품별 출하 수량 점유율(%)",
        "WITH t AS (SELECT product_id, SUM(quantity) AS q FROM shipments GROUP BY product_id) SELECT t.product_id, p.name, 100.0 * t.q / SUM(t.q) OVER () AS share FROM t JOIN products p ON p.id = t.product_id ORDER BY share DESC",
    ),
]

REFUSED: list[Refused] = [
    Refused("DROP TABLE shipments", "sql_not_select"),
    Refused("DELETE FROM shipments WHERE id = 1", "sql_not_select"),
    Refused("UPDATE customers SET tier = 'gold'", "sql_not_select"),
    Refused("INSERT INTO shipments (id) VALUES (99)", "sql_not_select"),
    Refused("SELECT * FROM shipments; DROP TABLE shipments", "sql_multiple_statements"),
    Refused("SELECT 1; SELECT 2", "sql_multiple_statements"),
    Refused("SELECT * FROM users", "sql_table_not_allowed"),
    Refused("SELECT name FROM sqlite_master", "sql_table_not_allowed"),
    Refused("SELECT table_name FROM information_schema.tables", "sql_table_not_allowed", "postgres"),
    Refused("SELECT usename FROM pg_catalog.pg_user", "sql_table_not_allowed", "postgres"),
    Refused("SELECT user, authentication_string FROM mysql.user", "sql_table_not_allowed", "mysql"),
    Refused("SELECT phone FROM customers", "sql_column_not_allowed"),
    Refused("SELECT c.phone FROM customers c", "sql_column_not_allowed"),
    Refused("SELECT id FROM shipments UNION SELECT password_hash FROM users", "sql_table_not_allowed"),
    Refused("SELECT id FROM shipments WHERE id IN (SELECT id FROM users)", "sql_table_not_allowed"),
    Refused("SELECT pg_sleep(10)", "sql_function_not_allowed", "postgres"),
    Refused("SELECT SLEEP(10)", "sql_function_not_allowed", "mysql"),
    Refused("SELECT BENCHMARK(100000000, MD5('x'))", "sql_function_not_allowed", "mysql"),
    Refused("SELECT LOAD_FILE('/etc/passwd')", "sql_function_not_allowed", "mysql"),
    Refused("SELECT pg_read_file('/etc/passwd')", "sql_function_not_allowed", "postgres"),
    Refused("SELECT lo_import('/etc/passwd')", "sql_function_not_allowed", "postgres"),
    Refused(
        "SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)", "sql_function_not_allowed", "postgres"
    ),
    Refused("SELECT set_config('statement_timeout', '0', false)", "sql_function_not_allowed", "postgres"),
    Refused("SELECT nextval('shipments_id_seq')", "sql_function_not_allowed", "postgres"),
    Refused("SELECT id FROM shipments FOR UPDATE", "sql_clause_not_allowed", "postgres"),
    Refused("SELECT id INTO stolen FROM shipments", "sql_clause_not_allowed", "postgres"),
    Refused("WITH d AS (DELETE FROM shipments RETURNING id) SELECT id FROM d", "sql_not_select", "postgres"),
    Refused("PRAGMA table_info(users)", "sql_not_select"),
    Refused("ATTACH DATABASE '/tmp/x.db' AS x", "sql_not_select"),
    Refused("COPY shipments TO '/tmp/out.csv'", "sql_not_select", "postgres"),
]
