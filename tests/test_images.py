"""Images in questions (P11): decoded and checked before any model sees them."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from hanrag.answer.images import check_image, load_image, load_images
from hanrag.errors import InvalidInputError
from hanrag.settings import ImageSettings


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def code(value: object, settings: ImageSettings | None = None) -> str:
    with pytest.raises(InvalidInputError) as err:
        asyncio.run(load_image(value, settings or ImageSettings()))
    return err.value.code


def bomb_header(width: int, height: int) -> bytes:
    """A small real PNG whose header claims a huge canvas (a decompression bomb)."""
    data = bytearray(png())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_base64_and_data_urls_are_accepted() -> None:
    data = png()
    for value in (
        base64.b64encode(data).decode(),
        "data:image/png;base64," + base64.b64encode(data).decode(),
    ):
        image = asyncio.run(load_image(value, ImageSettings()))
        assert image.mime_type == "image/png" and image.data == data
    # The declared type is not trusted: a PNG sent as image/jpeg is a PNG.
    lying = asyncio.run(
        load_image("data:image/jpeg;base64," + base64.b64encode(data).decode(), ImageSettings())
    )
    assert lying.mime_type == "image/png"


def test_bad_images_are_refused_with_stable_codes() -> None:
    assert code("") == "image_invalid"
    assert code(42) == "image_invalid"
    assert code("not base64 !!!") == "image_invalid"
    assert code(base64.b64encode(b"plain text, not an image").decode()) == "image_invalid"
    assert code(base64.b64encode(png()[:40]).decode()) == "image_invalid"  # truncated
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "BMP")
    assert code(base64.b64encode(buffer.getvalue()).decode()) == "image_unsupported_type"
    assert code(base64.b64encode(bomb_header(100_000, 100_000)).decode()) == "image_too_large"
    small = ImageSettings(max_mb=0.001)
    noisy = io.BytesIO()
    Image.frombytes("RGB", (64, 64), random.Random(7).randbytes(64 * 64 * 3)).save(noisy, "PNG")
    assert len(noisy.getvalue()) > 1100
    assert code(base64.b64encode(noisy.getvalue()).decode(), small) == "image_too_large"
    assert code(base64.b64encode(png(300, 10)).decode(), ImageSettings(max_side=200)) == "image_too_large"
    with pytest.raises(InvalidInputError) as err:
        asyncio.run(load_images(["a", "b", "c"], ImageSettings(max_images=2)))
    assert err.value.code == "too_many_images"
    with pytest.raises(InvalidInputError):
        check_image(b"", ImageSettings())


@pytest.fixture
def image_server() -> Iterator[str]:
    body = png()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/img.png")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_fetched_only_from_allowed_hosts(image_server: str) -> None:
    # Default: no URL is fetched (closed networks), loopback least of all.
    assert code(f"{image_server}/img.png") == "image_url_not_allowed"
    assert code("http://169.254.169.254/latest/meta-data", ImageSettings(url_allow=["example.com"])) == (
        "image_url_not_allowed"
    )
    allowed = ImageSettings(url_allow=["127.0.0.1/32"])
    image = asyncio.run(load_image(f"{image_server}/img.png", allowed))
    assert image.mime_type == "image/png"
    assert code(f"{image_server}/redirect", allowed) == "image_url_failed"  # redirects are not followed
    assert code("ftp://127.0.0.1/x.png", allowed) == "image_invalid"
