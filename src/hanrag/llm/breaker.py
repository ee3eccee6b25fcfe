"""Circuit breaker for one model provider.

Why: when a provider is down every call to it pays a connect error or, worse, a whole
timeout before the next provider (or the extractive fallback) is tried; the planner and
the answer of each question paid it twice. The breaker remembers the failures so that,
once open, the router skips the provider at no cost, and lets one probe through after a
cooldown to find out whether it came back.

States: ``closed`` (calls pass; ``failures`` failures within ``window_s`` with no success
in between open it) -> ``open`` (calls are refused until ``cooldown_s`` has passed) ->
``half_open`` (exactly one probe call passes; its success closes the breaker, its failure
opens it again for another cooldown). The clock is injectable so the transitions can be
tested without sleeping. Thread-safe: one engine serves several event loops (the API
server, job workers, CLI commands).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]

# The breaker state as a number (the Prometheus gauge).
STATE_VALUE: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    """``allow()`` before a call, then exactly one of ``success()``, ``failure()`` or
    ``release()`` (the call ended without a verdict on the provider's health: the caller
    gave up waiting for a slot, or the provider refused the request itself)."""

    def __init__(
        self,
        *,
        failures: int = 3,
        window_s: float = 60.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.failures = max(1, failures)
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._recent: deque[float] = deque()  # failure times within the window (closed state)
        self._opened_at = 0.0
        self._probing = False  # the half-open probe is in flight
        self.opened_count = 0  # how many times it opened (status)

    # ------------------------------------------------------------------ state

    def _set(self, state: BreakerState) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    def _refresh(self, now: float) -> None:
        """Open -> half-open once the cooldown has passed (checked lazily, no timer)."""
        if self._state == "open" and now - self._opened_at >= self.cooldown_s:
            self._probing = False
            self._set("half_open")

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._refresh(self._clock())
            return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state != "open":
                return 0.0
            return max(0.0, self.cooldown_s - (now - self._opened_at))

    # ------------------------------------------------------------------ calls

    def allow(self) -> bool:
        """Whether a call may go to the provider now; in half-open state only the first
        caller gets True (the probe) until its outcome is recorded."""
        with self._lock:
            if self._state == "closed":
                return True
            self._refresh(self._clock())
            if self._state == "half_open" and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._recent.clear()
            self._probing = False
            self._set("closed")

    def failure(self) -> None:
        with self._lock:
            now = self._clock()
            self._probing = False
            if self._state == "half_open":
                self._open(now)
                return
            if self._state == "open":
                return  # a call let through before it opened: the cooldown stands
            recent = self._recent
            recent.append(now)
            while recent and now - recent[0] > self.window_s:
                recent.popleft()
            if len(recent) >= self.failures:
                self._open(now)

    def release(self) -> None:
        """No verdict: a half-open probe slot is given back for the next caller."""
        with self._lock:
            self._probing = False

    def _open(self, now: float) -> None:
        self._recent.clear()
        self._opened_at = now
        self.opened_count += 1
        self._set("open")

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            now = self._clock()
            self._refresh(now)
            return {
                "state": self._state,
                "recent_failures": len(self._recent),
                "opened": self.opened_count,
                "retry_in_s": round(max(0.0, self.cooldown_s - (now - self._opened_at)), 3)
                if self._state == "open"
                else 0.0,
            }
