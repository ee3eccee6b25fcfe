"""Operator tooling over the whole stack: ``hanrag doctor`` and the readiness checks of
``/readyz`` (:mod:`.checks`, :mod:`.doctor`, :mod:`.readiness`), model reloads without a
restart (:mod:`.models`), and the ``.env`` template of every setting
(:mod:`.config_template`).

Its layer lies just below the entry points (CLI, API, MCP) and above the job system and
the engine, whose parts it checks and rebuilds; nothing below it may import it.
"""
