"""The earlier in-house service's wire format (LEGACY_API.md): the envelope, the error
object, its items and its timestamps. Shared by the legacy router and by the error
handlers, which answer legacy routes in this shape too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def now_text() -> str:
    return datetime.now().strftime(TIME_FORMAT)


def error_format(message: str, status: int, qry_id: str | None) -> dict[str, Any]:
    return {
        "status_code": status,
        "result": message,
        "qry_id": qry_id or "",
        "detail": "",
        "evt_time": now_text(),
    }


def envelope(qry_id: str | None, data_list: list[dict[str, Any]], *, last: bool = False) -> dict[str, Any]:
    return {
        "status_code": 200,
        "result": "OK",
        "detail": "",
        "continue": "E" if last else "C",
        "qry_id": qry_id,
        "rsp_time": now_text(),
        "data_list": data_list,
    }


def retrieval_item(label: str, references: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rsp_type": "R",
        "rsp_tit": label,
        "rsp_data": [
            {
                "rsp_tit": f"{i}번째 검색데이터: {ref['title']} (출처:{ref['file_name']})",
                "rsp_data": ref["text"],
                "chunk_id": ref["chunk_id"],
            }
            for i, ref in enumerate(references, start=1)
        ],
    }


def answer_item(text: str, n: int = 1, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An ``A`` item: the text (TT), then ``extra`` items (the table route's CT)."""
    items = [{"rsp_type": "TT", "rsp_data": text}, *(extra or [])]
    return {"rsp_type": "A", "rsp_tit": f"답변{n}", "rsp_data": items}


# The table route (P10): the rows as a TB item under an R item, the chart as a CT item.
TABLE_RESULT_TITLE = "SQL Query 결과표"
_CHART_TYPES = {"bar": "BAR", "line": "LINE"}


def table_records(table: dict[str, Any]) -> list[dict[str, Any]]:
    columns = table["columns"]
    return [dict(zip(columns, row, strict=False)) for row in table["rows"]]


def table_retrieval_item(label: str, table: dict[str, Any]) -> dict[str, Any]:
    return {
        "rsp_type": "R",
        "rsp_tit": label,
        "rsp_data": [
            {
                "rsp_tit": TABLE_RESULT_TITLE,
                "rsp_data": [{"rsp_type": "TB", "rsp_tit": table["title"], "rsp_data": table_records(table)}],
            }
        ],
    }


def chart_item(table: dict[str, Any]) -> dict[str, Any] | None:
    """The CT item, or None when the result's shape has no chart (a single value)."""
    chart = table.get("chart") or {}
    kind = _CHART_TYPES.get(str(chart.get("type")))
    if kind is None:
        return None
    return {
        "rsp_type": "CT",
        "rsp_tit": chart.get("title") or table["title"],
        "rsp_data": {"chart_tp": kind, "chart_data": table_records(table)},
    }
