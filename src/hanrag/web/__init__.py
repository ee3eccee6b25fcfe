"""The web app (issue P12): plain HTML, CSS and JavaScript modules shipped in this package
and served by ``hanrag serve`` at ``/`` (same origin as the API, no build step, nothing
fetched from elsewhere).

:func:`web_mount` is the route that serves it (or the operator's ``api.static_dir``): it
matches only ``GET``/``HEAD`` requests that no other route of the app knows, so the API,
OpenAI-compatible and legacy routes always win (a wrong method on an API path stays a 405,
an unknown API path a problem+json 404). The packaged app's responses carry a strict
Content-Security-Policy: scripts, styles and connections from this origin only, no inline
code, no framing.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (ETag / Last-Modified): an upgrade is seen at once.
    "Cache-Control": "no-cache",
}
# Paths the web app never serves, whatever is in its directory.
_API_PREFIXES = ("/api/", "/v1/", "/metrics")
# Python files of this package are not part of the app.
_HIDDEN_SUFFIXES = (".py", ".pyc")
# Sent gzip-compressed to clients that accept it (compressed once per file version).
_COMPRESSIBLE = (".html", ".js", ".css", ".svg", ".json")


@lru_cache(maxsize=64)
def _gzipped(path: str, mtime_ns: int, size: int) -> bytes:
    """The file's bytes, gzip-compressed (the key changes with the file)."""
    with open(path, "rb") as file:
        return gzip.compress(file.read(), compresslevel=9, mtime=0)


class WebFiles(StaticFiles):
    """Static files with security headers (the packaged app) and no Python sources."""

    def __init__(self, directory: Path, *, secure: bool) -> None:
        super().__init__(directory=str(directory), html=True)
        self.secure = secure

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path.endswith(_HIDDEN_SUFFIXES) or "__pycache__" in path:
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        if self.secure:
            for name, value in SECURITY_HEADERS.items():
                response.headers[name] = value
        return response

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if (
            not self.secure
            or not isinstance(response, FileResponse)
            or scope.get("method") != "GET"
            or not str(full_path).endswith(_COMPRESSIBLE)
            or "gzip" not in Headers(scope=scope).get("accept-encoding", "")
        ):
            return response
        body = _gzipped(str(full_path), stat_result.st_mtime_ns, stat_result.st_size)
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        # Another representation of the same version: a weak validator (If-None-Match
        # matches it as the strong one, W/ removed).
        headers["etag"] = "W/" + response.headers["etag"]
        headers["content-encoding"] = "gzip"
        headers["vary"] = "Accept-Encoding"
        return Response(body, status_code=status_code, headers=headers)


class WebMount(Mount):
    """``/`` for the web app, after every other route: GET/HEAD only, and never a path
    that another route of ``routes`` matches (fully or by path alone)."""

    def __init__(self, app: StaticFiles, routes: list[BaseRoute]) -> None:
        super().__init__("/", app=app, name="ui")
        self.others = routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("type") != "http" or scope.get("method") not in ("GET", "HEAD"):
            return Match.NONE, {}
        if str(scope.get("path", "")).startswith(_API_PREFIXES):
            return Match.NONE, {}
        for route in self.others:
            if route is not self and route.matches(scope)[0] != Match.NONE:
                return Match.NONE, {}
        return super().matches(scope)


def web_mount(static_dir: Path | None, routes: list[BaseRoute]) -> WebMount:
    """The route serving the packaged web app (with its security headers) when
    ``static_dir`` is None or this package, else the operator's own UI in ``static_dir``
    (as is)."""
    directory = WEB_DIR if static_dir is None else Path(static_dir).resolve()
    return WebMount(WebFiles(directory, secure=directory == WEB_DIR), routes)
