"""`hanrag serve --ray`: the API served by Ray Serve replicas on a local Ray instance."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, subprocess.Popen[bytes]]:
    data_dir = tmp_path_factory.mktemp("ray-data")
    docs = tmp_path_factory.mktemp("ray-docs")
    (docs / "공지.md").write_text("# 사내 공지\n\n구내식당은 오전 11시 30분에 문을 엽니다.", encoding="utf-8")
    hanrag = str(Path(sys.executable).with_name("hanrag"))
    env = {**os.environ, "HANRAG_DATA_DIR": str(data_dir)}
    subprocess.run([hanrag, "ingest", str(docs)], env=env, check=True, capture_output=True, timeout=300)
    port = _free_port()
    process = subprocess.Popen(
        [hanrag, "serve", "--ray", "--replicas", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail(
                f"hanrag serve --ray exited: {process.stdout.read().decode()[-2000:] if process.stdout else ''}"
            )
        time.sleep(1)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("Ray Serve did not become ready in 240 s")
    yield base, process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_replicas_answer_the_same_routes(ray_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _process = ray_server
    hits = httpx.post(
        f"{base}/api/v1/search", json={"query": "구내식당 여는 시간", "k": 1}, timeout=60
    ).json()["hits"]
    assert hits and "11시 30분" in hits[0]["text"]
    answer = httpx.post(
        f"{base}/api/v1/ask", json={"question": "구내식당은 몇 시에 여나요?"}, timeout=60
    ).json()
    assert "11시 30분" in answer["answer"] and answer["citations"]
    # The session written by one replica is continued by whichever replica serves the next turn.
    session_id = answer["session_id"]
    for _ in range(3):
        follow = httpx.post(
            f"{base}/api/v1/ask",
            json={"question": "구내식당 여는 시간 다시 알려 주세요", "session_id": session_id},
            timeout=60,
        )
        assert follow.status_code == 200, follow.text
    messages = httpx.get(f"{base}/api/v1/sessions/{session_id}/messages", timeout=30).json()
    assert len(messages) == 8
    bad = httpx.post(f"{base}/api/v1/search", json={"query": ""}, timeout=30)
    assert bad.status_code == 400 and bad.json()["code"] == "empty_query"
