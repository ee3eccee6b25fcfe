"""A query result as a GitHub-flavoured Markdown table (issue P10, the table route)."""

from __future__ import annotations

from typing import Any

from hanrag.tables.execute import QueryResult


def _cell(value: Any) -> str:
    """One cell's text: empty for NULL, ``|`` escaped, line breaks as ``<br>``."""
    if value is None:
        return ""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("|", "\\|").replace("\n", "<br>")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def markdown_table(result: QueryResult, *, max_rows: int = 50) -> str:
    """``result`` as a Markdown table of at most ``max_rows`` rows (numbers right-aligned),
    with a last line saying so when rows were left out, here or by the query's own cap."""
    if not result.columns:
        return "(결과 없음)"
    shown = result.rows[:max_rows]
    aligns = []
    for index in range(len(result.columns)):
        cells = [row[index] for row in result.rows if index < len(row) and row[index] is not None]
        aligns.append("---:" if cells and all(_is_number(cell) for cell in cells) else "---")
    lines = [
        "| " + " | ".join(_cell(name) for name in result.columns) + " |",
        "| " + " | ".join(aligns) + " |",
    ]
    for row in shown:
        cells = [_cell(row[i] if i < len(row) else None) for i in range(len(result.columns))]
        lines.append("| " + " | ".join(cells) + " |")

    total = len(result.rows)
    if total == 0:
        lines.append("(결과 없음)")
    elif len(shown) < total and result.truncated:
        lines.append(f"(처음 {len(shown)}행만 표시, 조회 결과도 {total}행에서 잘려 전체 행은 더 많습니다)")
    elif len(shown) < total:
        lines.append(f"(처음 {len(shown)}행만 표시, 전체 {total}행)")
    elif result.truncated:
        lines.append(f"(조회 결과가 {total}행에서 잘렸습니다: 전체 행은 더 많습니다)")
    return "\n".join(lines)
