"""The SQL validator (P10): acceptance, refusal and time per query.

Usage::

    .venv/bin/python bench/sql_validator.py [--repeat N]

Runs ``hanrag.tables.validate_select`` over the 30 accepted Korean table questions and the 30
refused strings of ``tests/sql_cases.py`` (accepted ones in all three dialects), ``--repeat``
times each, and prints accepted n/30, refused n/30 (with the expected code) and the
validation time per query, p50 and p95. P10's target for the whole table route is 50 ms p95
of overhead; the validator's share is this p95.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hanrag.errors import InvalidInputError
from hanrag.tables import validate_select
from sql_cases import ACCEPTED, ALLOWED, REFUSED


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to Command" warnings

    rows: list[tuple[str, str, str, float, float]] = []
    failures: list[str] = []
    for dialect in ("sqlite", "postgres", "mysql"):
        times: list[float] = []
        ok = 0
        for case in ACCEPTED:
            good = True
            for _ in range(args.repeat):
                start = time.perf_counter()
                try:
                    validate_select(case.sql, dialect=dialect, allowed=ALLOWED, max_rows=1000)
                except InvalidInputError as err:
                    good = False
                    failures.append(f"accepted/{dialect}: {case.question}: {err}")
                    break
                times.append((time.perf_counter() - start) * 1000)
            ok += good
        rows.append(
            (f"accepted ({dialect})", f"{ok}/{len(ACCEPTED)}", "", _pct(times, 0.5), _pct(times, 0.95))
        )

    times = []
    refused = right_code = 0
    for r in REFUSED:
        for i in range(args.repeat):
            start = time.perf_counter()
            try:
                validate_select(r.sql, dialect=r.dialect, allowed=ALLOWED, max_rows=1000)
            except InvalidInputError as err:
                times.append((time.perf_counter() - start) * 1000)
                if i == 0:
                    refused += 1
                    right_code += err.code == r.code
                continue
            failures.append(f"refused/{r.dialect}: NOT refused: {r.sql}")
            break
    rows.append(
        (
            "refused",
            f"{refused}/{len(REFUSED)}",
            f"{right_code}/{len(REFUSED)}",
            _pct(times, 0.5),
            _pct(times, 0.95),
        )
    )

    print(f"{'set':<22} {'result':>7} {'code ok':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for name, result, codes, p50, p95 in rows:
        print(f"{name:<22} {result:>7} {codes:>8} {p50:>8.2f} {p95:>8.2f}")
    print(
        f"(x{args.repeat} each; mean of all accepted: {statistics.mean([r[3] for r in rows[:3]]):.2f} ms p50)"
    )
    for line in failures:
        print("FAIL", line)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
