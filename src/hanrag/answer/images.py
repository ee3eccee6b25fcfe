"""Images that questions carry (issue P11): base64, ``data:`` URLs and, only where the
operator allows their hosts, http(s) URLs — checked before any model sees them.

Every image is decoded and sniffed with Pillow: the declared type is never trusted, only
PNG, JPEG, WebP and GIF pass, the byte size and the pixel dimensions are capped *before*
the pixels are decoded (a decompression bomb is refused from its header), and
``Image.verify`` rejects truncated or corrupt files. URLs are refused unless their host is
in ``images.url_allow`` (the same host rules as job callbacks, :mod:`hanrag.netpolicy`);
redirects are not followed and the download stops at the size cap. There is no fetching at
all in the default configuration (closed networks).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import re
import socket
from collections.abc import Sequence
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import httpx

from hanrag.answer.prompts import PromptSet, image_description_prompt
from hanrag.errors import InvalidInputError
from hanrag.llm.base import GenerationOptions, Generator, ImageInput, Turn
from hanrag.netpolicy import destination_allowed, offline_refusal
from hanrag.settings import ImageSettings

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*;base64,(?P<data>.*)$", re.DOTALL
)


def _invalid(message: str, code: str = "image_invalid") -> InvalidInputError:
    return InvalidInputError(message, code=code, field="image")


def check_image(data: bytes, settings: ImageSettings) -> ImageInput:
    """The image as a model may get it, or an ``InvalidInputError`` with a stable code."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _invalid("the image is empty")
    if len(data) > settings.max_mb * 2**20:
        raise _invalid(f"the image is larger than {settings.max_mb:g} MB", "image_too_large")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            kind = probe.format or ""
            width, height = probe.size
    except Image.DecompressionBombError:
        raise _invalid("the image has more pixels than allowed", "image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise _invalid("not a readable image (PNG, JPEG, WebP or GIF)") from None
    if kind not in FORMATS:
        raise _invalid(
            f"images must be PNG, JPEG, WebP or GIF, not {kind or 'unknown'}", "image_unsupported_type"
        )
    if max(width, height) > settings.max_side or width * height > settings.max_pixels:
        raise _invalid(f"the image is {width}x{height} pixels, more than allowed", "image_too_large")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structure and checksums, without keeping the pixels
    except Exception:  # Pillow raises many types for corrupt data
        raise _invalid("the image is truncated or corrupt") from None
    return ImageInput(FORMATS[kind], data)


def decode_base64(value: str) -> bytes:
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("the image is neither base64 nor a data: URL") from None


def _host_allowed(host: str, settings: ImageSettings) -> bool:
    if not settings.url_allow:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return bool(addresses) and destination_allowed(host, addresses, list(settings.url_allow))


async def fetch_image(url: str, settings: ImageSettings, offline: list[str] | None = None) -> bytes:
    """``offline``: the ``offline_allow`` entries in offline mode (None: not offline)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("an image URL must be http(s)")
    if offline is not None and (why := offline_refusal(url, offline)) is not None:
        raise _invalid(f"the image URL is refused: {why}", "offline_refused")
    allowed = await asyncio.to_thread(_host_allowed, parts.hostname, settings)
    if not allowed:
        raise _invalid(
            "image URLs are not fetched from this host (images.url_allow); send the image as base64",
            "image_url_not_allowed",
        )
    limit = int(settings.max_mb * 2**20)
    try:
        async with (
            httpx.AsyncClient(timeout=settings.url_timeout_s, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise _invalid(f"the image URL answered HTTP {response.status_code}", "image_url_failed")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise _invalid(f"the image is larger than {settings.max_mb:g} MB", "image_too_large")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise _invalid(
            f"the image URL could not be read ({type(exc).__name__})", "image_url_failed"
        ) from None
    return b"".join(chunks)


async def load_image(value: Any, settings: ImageSettings, offline: list[str] | None = None) -> ImageInput:
    """One image from what a client sent: a data: URL, base64 text or an allowed http(s) URL."""
    if not isinstance(value, str) or not value.strip():
        raise _invalid("an image must be a base64 string, a data: URL or an http(s) URL")
    text = value.strip()
    if len(text) > settings.max_mb * 2**20 * 4 / 3 + 1024:
        raise _invalid(f"the image is larger than {settings.max_mb:g} MB", "image_too_large")
    match = _DATA_URL.match(text)
    if match:
        data = decode_base64(match.group("data"))
    elif re.match(r"(?i)^https?://", text):
        data = await fetch_image(text, settings, offline)
    else:
        data = decode_base64(text)
    return await asyncio.to_thread(check_image, data, settings)


async def load_images(
    values: Sequence[Any], settings: ImageSettings, offline: list[str] | None = None
) -> list[ImageInput]:
    if len(values) > settings.max_images:
        raise _invalid(f"at most {settings.max_images} images per question", "too_many_images")
    return [await load_image(value, settings, offline) for value in values]


async def describe_images(
    vision: Generator,
    question: str,
    images: list[ImageInput],
    *,
    today: date,
    prompts: PromptSet | None = None,
    max_tokens: int = 400,
) -> str:
    """The vision model's Korean description of the images, for planning and retrieval
    (the earlier service joined it to the question the same way)."""
    instruction = image_description_prompt(question, today=today.isoformat(), prompts=prompts)
    messages = [Turn("user", instruction, images=list(images))]
    reply = await vision.complete(messages, GenerationOptions(max_tokens=max_tokens, temperature=0.0))
    return " ".join(reply.split())
