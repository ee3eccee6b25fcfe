"""Schema migrations with Alembic, for SQLite and PostgreSQL alike.

``ensure_schema`` brings a catalog database to the newest revision once per
process (the embedded default needs no separate step); ``hanrag db upgrade``
does the same explicitly, which operators of a shared PostgreSQL prefer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

_MIGRATIONS = Path(__file__).with_name("migrations")
_done: set[str] = set()
_lock = threading.Lock()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Upgrade to head; returns (revision before, revision after).

    A catalog made before migrations existed (``create_all`` of an earlier release) is not
    stamped blindly: it holds only the tables its release knew, so the first revision runs
    and creates just the missing ones, which records the revision like any other upgrade.
    """
    before = current_revision(engine)
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before, current_revision(engine)


def ensure_schema(engine: Engine) -> None:
    key = engine.url.render_as_string(hide_password=False)
    if key in _done:
        return
    with _lock:
        if key in _done:
            return
        if current_revision(engine) != head_revision():
            try:
                upgrade(engine)
            except Exception:
                # Another process may have migrated at the same moment; fine if it is at head now.
                if current_revision(engine) != head_revision():
                    raise
        _done.add(key)
