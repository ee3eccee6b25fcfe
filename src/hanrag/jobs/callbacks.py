"""Callback delivery: POST the result, signed, with an idempotency key, retried with backoff.

Headers sent with every attempt:

* ``Idempotency-Key: <job id>`` — the same on every retry and every re-run of the
  job, so a receiver that stores it can drop duplicates (at-least-once delivery);
* ``X-Hanrag-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``;
* ``X-Hanrag-Job-Id``, and the configured or per-request auth headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

log = logging.getLogger("hanrag.jobs")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """For receivers (and tests): check a signature header against the raw body."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


async def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    job_id: str,
    secret: str,
    headers: dict[str, str],
    attempts: int,
    timeout_s: float,
    backoff_s: float,
) -> dict[str, Any]:
    """Try up to ``attempts`` times; returns a delivery report (never raises)."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    last_error = ""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        for attempt in range(1, attempts + 1):
            timestamp = int(time.time())
            request_headers = {
                **headers,
                "Content-Type": "application/json",
                "Idempotency-Key": job_id,
                "X-Hanrag-Job-Id": job_id,
                "X-Hanrag-Signature": sign(secret, timestamp, body),
            }
            try:
                response = await client.post(url, content=body, headers=request_headers)
                if response.status_code < 300:
                    return {"delivered": True, "attempts": attempt, "status": response.status_code}
                last_error = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 409, 425, 429):
                    break  # the receiver refuses this payload; retrying will not change that
            except httpx.HTTPError as exc:
                last_error = type(exc).__name__
            log.warning("callback failed", extra={"job_id": job_id, "attempt": attempt, "reason": last_error})
            if attempt < attempts:
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    return {"delivered": False, "attempts": attempt, "error": last_error}
