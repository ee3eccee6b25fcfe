"""Where job callbacks may go, and what they carry (issue P7: no SSRF, no leaked credentials).

Everything goes over real HTTP: the API is uvicorn on loopback (token auth, a viewer
and an editor), the callback receivers are HTTP servers on loopback. Nothing leaves
the machine: an autouse fixture resolves only ``localhost`` and numeric hosts (any
other name is unknown) and lets connections reach loopback only, recording every
connection the server tries, so a refused destination is also never connected to.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import ValidationError

from api_server import LiveServer, start_server
from hanrag.engine import Engine
from hanrag.jobs import callbacks
from hanrag.jobs.base import FINAL_STATES, JobRecord
from hanrag.jobs.inprocess import InProcessQueue
from hanrag.settings import Settings
from jobs_support import CallbackReceiver, wait_until

PASSWORD = "callback-test-password"
CONFIGURED_SECRET = "operator-secret-4f1c"  # jobs.callback_headers: the operator's credential
REQUEST_SECRET = "caller-token-93ab"  # a caller's own callback header


# ------------------------------------------------------------------ offline


@dataclass
class Offline:
    connects: list[str] = field(default_factory=list)  # every host a connection was tried to


def _numeric(host: str) -> bool:
    try:
        socket.inet_aton(host)  # also 127.1, 0x7f.1, 2130706433, 0177.0.0.1
        return True
    except OSError:
        pass
    try:
        socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Offline:
    """Names other than ``localhost`` do not resolve; connections reach loopback only."""
    state = Offline()
    real_getaddrinfo = socket.getaddrinfo
    real_connect_tcp = anyio.connect_tcp

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name == "localhost" or _numeric(name):
            return real_getaddrinfo(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"{name}: unknown (the tests are offline)")

    async def connect_tcp(remote_host: Any, remote_port: int, **kwargs: Any) -> Any:
        host = str(remote_host)
        state.connects.append(host)
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OSError(errno.ENETUNREACH, f"{host}: not reachable (the tests are offline)")
        return await real_connect_tcp(remote_host, remote_port, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(anyio, "connect_tcp", connect_tcp)
    return state


# ---------------------------------------------------------------- receivers


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def second_receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver().start()
    yield server
    server.stop()


def via_localhost(receiver: CallbackReceiver) -> str:
    """The receiver's URL with the name ``localhost`` instead of 127.0.0.1."""
    return receiver.url.replace("127.0.0.1", "localhost")


@dataclass
class Redirector:
    """Answers every POST with a 307 to ``location``."""

    location: str
    hits: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Redirector:
        redirector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                redirector.hits += 1
                self.send_response(307)
                self.send_header("location", redirector.location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# ------------------------------------------------------------------ the API


@dataclass
class Api:
    engine: Engine
    live: LiveServer
    tokens: dict[str, str]
    root: Path  # an (empty) ingest server root

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.live.url, timeout=30, headers={"Authorization": f"Bearer {self.tokens[who]}"}
        )

    def ingest(self, **callback: Any) -> httpx.Response:
        """An editor's ingestion job of an empty folder: it ends at once, with its callback."""
        with self.client("editor") as client:
            return client.post("/api/v1/ingest", json={"paths": [str(self.root)], **callback})

    def finished(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The job as GET /api/v1/jobs/{id} shows it once its callback delivery has ended."""
        with self.client("editor") as client:

            def ended() -> dict[str, Any] | None:
                response = client.get(f"/api/v1/jobs/{job_id}")
                assert response.status_code == 200, response.text
                job: dict[str, Any] = response.json()["data"]
                return job if job["state"] in FINAL_STATES and job["callback"] is not None else None

            found: dict[str, Any] = wait_until(ended, timeout, f"job {job_id} and its callback")
            return found


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def build(**jobs: Any) -> Api:
        root = tmp_path / f"root{len(made)}"
        (root / "empty").mkdir(parents=True)
        settings = Settings(
            data_dir=tmp_path / f"data{len(made)}",
            auth={"mode": "token"},
            ingest={"server_roots": [str(root)]},
            jobs={"callback_attempts": 3, "callback_backoff_s": 0.05, "callback_timeout_s": 5, **jobs},
        )
        engine = Engine(settings)
        engine.auth.create_user("viewer", PASSWORD, role="viewer")
        engine.auth.create_user("editor", PASSWORD, role="editor")
        tokens = {name: engine.auth.login(name, PASSWORD)["access_token"] for name in ("viewer", "editor")}
        made.append(Api(engine, start_server(engine), tokens, root / "empty"))
        return made[-1]

    yield build
    for made_api in made:
        made_api.live.stop()
        made_api.engine.close()


def assert_refused(
    response: httpx.Response, field: str = "callback_url", code: str = "callback_not_allowed"
) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == 400 and isinstance(body["message"], str) and body["message"]
    assert body["data"] == {"code": code, "field": field}, body


# -------------------------------------------------------------------- tests

REFUSED_BY_DEFAULT = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost/hook",
    "http://127.1:{port}/hook",
    "http://0x7f.0.0.1/hook",
    "http://0177.0.0.1/hook",
    "http://2130706433/hook",
    "http://0.0.0.0:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://224.0.0.1/hook",
    "http://255.255.255.255/hook",
    "https://unknown-host.invalid/hook",
]


def test_a_viewer_naming_loopback_metadata_or_link_local_gets_400_at_submit(
    api: Callable[..., Api], receiver: CallbackReceiver, offline: Offline
) -> None:
    server = api(callback_headers={"X-Api-Key": CONFIGURED_SECRET})
    port = receiver.url.split(":")[2].split("/")[0]
    with server.client("viewer") as client:
        for template in REFUSED_BY_DEFAULT:
            url = template.format(port=port)
            response = client.post(
                "/api/v1/jobs/ask", json={"question": "연차휴가는 며칠인가요?", "callback_url": url}
            )
            assert_refused(response)
            assert CONFIGURED_SECRET not in response.text
        only_http = client.post(
            "/api/v1/jobs/ask",
            json={"question": "연차휴가는 며칠인가요?", "callback_url": "ftp://example.com/x"},
        )
        assert only_http.status_code == 400
    # The editor's ingestion is checked the same way.
    assert_refused(server.ingest(callback_url=f"http://127.0.0.1:{port}/hook"))
    assert receiver.received() == []
    assert offline.connects == []  # nothing was even tried
    # Private ranges (company backends) are fine by default; the delivery connects to the
    # checked address only (and, the tests being offline, fails there).
    private = server.ingest(callback_url="http://10.0.0.7:8080/hook")
    assert private.status_code == 202, private.text
    job = server.finished(private.json()["data"]["job_id"])
    assert job["callback"]["delivered"] is False and job["callback"]["error"] == "ConnectError"
    assert set(offline.connects) == {"10.0.0.7"}


def test_with_the_loopback_receiver_allowed_callbacks_arrive(
    api: Callable[..., Api], receiver: CallbackReceiver
) -> None:
    server = api(callback_allow=["127.0.0.1"])
    response = server.ingest(callback_url=receiver.url)
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["job_id"]
    call = receiver.wait_accepted(job_id, timeout=30)
    assert call.body["data"]["state"] == "succeeded"
    assert server.finished(job_id)["callback"] == {"delivered": True, "attempts": 1, "status": 200}
    # No credentials in the URL (GET /api/v1/jobs/{id} shows it); they go in callback_headers.
    assert_refused(server.ingest(callback_url=receiver.url.replace("http://", "http://user:pw@")))
    # Listing only 127.0.0.1 allows nothing else, loopback or not.
    for url in ("http://[::1]/hook", "http://10.0.0.7/hook", "http://169.254.169.254/"):
        assert_refused(server.ingest(callback_url=url))


def test_configured_headers_reach_only_the_listed_hosts_and_never_leak(
    api: Callable[..., Api],
    receiver: CallbackReceiver,
    second_receiver: CallbackReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = api(
        callback_allow=["127.0.0.1", "::1"],
        callback_headers={"X-Api-Key": CONFIGURED_SECRET},
        callback_header_hosts=["localhost"],
    )
    caplog.set_level(logging.DEBUG)
    own = {"Authorization": f"Bearer {REQUEST_SECRET}"}
    unlisted = server.ingest(callback_url=receiver.url, callback_headers=own)
    listed = server.ingest(callback_url=via_localhost(second_receiver), callback_headers=own)
    assert unlisted.status_code == 202 and listed.status_code == 202, (unlisted.text, listed.text)
    unlisted_id, listed_id = unlisted.json()["data"]["job_id"], listed.json()["data"]["job_id"]

    plain = receiver.wait_accepted(unlisted_id)
    assert "x-api-key" not in plain.headers  # 127.0.0.1 is allowed, but not a header host
    assert plain.headers["authorization"] == f"Bearer {REQUEST_SECRET}"  # the caller's own
    secret = (server.engine.settings.data_dir / "callback-secret").read_text().strip()
    assert callbacks.verify(secret, plain.headers["x-hanrag-signature"], plain.raw)
    trusted = second_receiver.wait_accepted(listed_id)
    assert trusted.headers["x-api-key"] == CONFIGURED_SECRET  # localhost is a header host
    assert trusted.headers["host"].startswith("localhost:")  # pinned to an address, named as given
    assert trusted.headers["authorization"] == f"Bearer {REQUEST_SECRET}"

    for job_id in (unlisted_id, listed_id):
        with server.client("editor") as client:
            shown = client.get(f"/api/v1/jobs/{job_id}")
        assert shown.status_code == 200
        assert CONFIGURED_SECRET not in shown.text and REQUEST_SECRET not in shown.text
        assert "callback_headers" not in shown.json()["data"]
    assert server.finished(unlisted_id)["callback"]["delivered"] is True
    assert CONFIGURED_SECRET not in caplog.text and REQUEST_SECRET not in caplog.text


def test_a_name_that_rebinds_to_loopback_is_refused_at_delivery(
    api: Callable[..., Api],
    receiver: CallbackReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The name passes at submit (it resolves to a public address then) and resolves to
    loopback when the callback is sent: nothing is sent, the job tells why."""
    server = api(
        callback_allow=["localhost"],  # a name entry: never loopback
        callback_headers={"X-Api-Key": CONFIGURED_SECRET},
        callback_header_hosts=["localhost"],
    )
    real = callbacks.resolve_host if hasattr(callbacks, "resolve_host") else None
    answers = iter([[ipaddress.ip_address("203.0.113.7")]])

    def rebinding(host: str, port: int) -> list[Any]:
        first = next(answers, None)
        if first is not None:
            return first
        assert real is not None
        return real(host, port)

    monkeypatch.setattr(callbacks, "resolve_host", rebinding, raising=False)
    caplog.set_level(logging.DEBUG)
    response = server.ingest(
        callback_url=via_localhost(receiver), callback_headers={"Authorization": f"Bearer {REQUEST_SECRET}"}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["job_id"]
    job = server.finished(job_id)
    assert job["state"] == "succeeded"
    assert job["callback"] == {"delivered": False, "attempts": 1, "error": "callback_not_allowed"}
    assert receiver.received() == []
    with server.client("editor") as client:
        shown = client.get(f"/api/v1/jobs/{job_id}").text
    assert CONFIGURED_SECRET not in shown and REQUEST_SECRET not in shown
    assert CONFIGURED_SECRET not in caplog.text and REQUEST_SECRET not in caplog.text
    # Once delivery has ended the caller's header is dropped from the stored record too.
    stored = server.live.app.state.jobs.store.get(job_id)
    assert stored is not None and stored.callback_headers == {}


def test_a_job_queued_without_the_submit_check_is_refused_at_delivery(
    tmp_path: Path, receiver: CallbackReceiver
) -> None:
    """Jobs put in the queue by other means (the CLI, an older server) are checked when sent."""
    engine = Engine(
        Settings(data_dir=tmp_path / "data", jobs={"callback_headers": {"X-Api-Key": CONFIGURED_SECRET}})
    )

    async def main() -> JobRecord:
        queue = InProcessQueue(engine)
        await queue.start()
        try:
            # A job whose cancel was asked for ends at once, with its callback.
            record = await queue.enqueue(
                JobRecord(
                    kind="ask", payload={"question": "질문"}, callback_url=receiver.url, control="cancel"
                )
            )
            with anyio.fail_after(30):
                while True:
                    found = await anyio.to_thread.run_sync(queue.store.get, record.id)
                    if found is not None and found.callback is not None:
                        return found
                    await anyio.sleep(0.05)
        finally:
            await queue.stop()

    try:
        done = anyio.run(main)
    finally:
        engine.close()
    assert done.state == "cancelled"
    assert done.callback == {"delivered": False, "attempts": 1, "error": "callback_not_allowed"}
    assert receiver.received() == []


def test_a_redirect_is_not_followed(
    api: Callable[..., Api], receiver: CallbackReceiver, offline: Offline
) -> None:
    server = api(callback_allow=["127.0.0.1"], callback_headers={"X-Api-Key": CONFIGURED_SECRET})
    for location in ("http://169.254.169.254/latest/meta-data/", "http://[::1]/hook", receiver.url):
        redirector = Redirector(location).start()
        try:
            response = server.ingest(callback_url=redirector.url)
            assert response.status_code == 202, response.text
            job = server.finished(response.json()["data"]["job_id"])
        finally:
            redirector.stop()
        callback = job["callback"]
        assert callback["delivered"] is False and callback["attempts"] == 1, callback
        assert callback["error"].startswith("HTTP 307"), callback
        assert redirector.hits == 1  # not retried: a redirect will not change
    assert receiver.received() == []
    assert set(offline.connects) == {"127.0.0.1"}


BAD_HEADERS: list[dict[str, str]] = [
    {"Host": "internal.example"},
    {"host": "internal.example"},
    {"Content-Length": "0"},
    {"Transfer-Encoding": "chunked"},
    {"Connection": "close"},
    {"X-Hanrag-Signature": "t=1,v1=00"},
    {"x-hanrag-signature": "t=1,v1=00"},
    {"Idempotency-Key": "someone-else"},
    {"Content-Type": "text/plain"},
    {"Proxy-Authorization": "Basic eA=="},
    {"X-Ok": "a\r\nX-Injected: 1"},
    {"X-Ok": "a\nb"},
    {"X-Ok": "a\rb"},
    {"Bad Name": "x"},
    {"Bad:Name": "x"},
    {"X-Big": "x" * 5000},
    {f"X-H{i}": "v" for i in range(21)},
    {f"X-H{i}": "v" * 1000 for i in range(10)},
]


def test_per_request_headers_cannot_smuggle_and_are_bounded(
    api: Callable[..., Api], receiver: CallbackReceiver
) -> None:
    server = api(callback_allow=["127.0.0.1"])
    with server.client("viewer") as client:
        for headers in BAD_HEADERS:
            response = client.post(
                "/api/v1/jobs/ask",
                json={"question": "질문", "callback_url": receiver.url, "callback_headers": headers},
            )
            assert_refused(response, field="callback_headers", code="invalid_callback_headers")
            assert "X-Injected" not in response.text
    ok = server.ingest(callback_url=receiver.url, callback_headers={"X-Trace": "abc", "Authorization": "x"})
    assert ok.status_code == 202, ok.text
    call = receiver.wait_accepted(ok.json()["data"]["job_id"])
    assert call.headers["x-trace"] == "abc" and call.headers["content-type"] == "application/json"


def test_callback_allow_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HANRAG_JOBS__CALLBACK_ALLOW", json.dumps(["Hooks.Example.COM.", "*.corp.example", "10.0.0.0/8"])
    )
    monkeypatch.setenv("HANRAG_JOBS__CALLBACK_HEADER_HOSTS", json.dumps(["[::1]"]))
    jobs = Settings().jobs
    assert jobs.callback_allow == ["hooks.example.com", "*.corp.example", "10.0.0.0/8"]
    assert jobs.callback_header_hosts == ["::1/128"]
    monkeypatch.delenv("HANRAG_JOBS__CALLBACK_HEADER_HOSTS")
    assert Settings().jobs.callback_header_hosts == []
    for bad in (["hooks.example.com:8443"], ["10.0.0.0/33"], ["bad host"], [""]):
        with pytest.raises(ValidationError):
            Settings(jobs={"callback_allow": bad})
