"""Table questions answered with SQL (issue P10).

``sql_guard.validate_select`` is the gate every LLM-written query passes before it runs.
"""

from __future__ import annotations

from hanrag.tables.sql_guard import DIALECTS, validate_select

__all__ = ["DIALECTS", "validate_select"]
