"""``hanrag doctor``: every configured dependency checked for real, at once.

:func:`plan` lists the checks the settings call for (see :mod:`.checks`): the catalog
and its migrations, the index against the catalog, the embedding model, each model
provider, Redis, Milvus and each SQL source when configured, free space and write
access in the data directory, and the clock against a PostgreSQL catalog.
:func:`run_checks` runs them in parallel threads, each after the checks it needs
(the index after the catalog, ...) and under its own time limit: a dependency that
hangs costs its limit, not the whole run. A check whose prerequisite failed is
``skip``; the report keeps the plan's order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hanrag.ops import checks
from hanrag.ops.checks import Found, Verdict, reason

if TYPE_CHECKING:
    from hanrag.engine import Engine

# Seconds a network check (a connection, one request) may take.
DEFAULT_TIMEOUT_S = 10.0
# Opening a large local index or loading a model from disk takes longer.
LOAD_TIMEOUT_S = 120.0


@dataclass(slots=True)
class CheckResult:
    name: str
    verdict: Verdict
    detail: str
    remedy: str | None
    seconds: float
    # A failure of a critical check means this process cannot serve its requests.
    critical: bool
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "detail": self.detail,
            "remedy": self.remedy,
            "duration_ms": round(self.seconds * 1000, 1),
            "critical": self.critical,
            "data": self.data,
        }


@dataclass(slots=True)
class DoctorReport:
    results: list[CheckResult]
    started_at: datetime
    seconds: float

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == "fail"]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {"ok": 0, "warn": 0, "fail": 0, "skip": 0}
        for result in self.results:
            found[result.verdict] += 1
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "duration_ms": round(self.seconds * 1000, 1),
            "counts": self.counts(),
            "checks": [r.as_dict() for r in self.results],
        }


@dataclass(slots=True)
class Spec:
    """One planned check. ``run`` gives a :class:`Found`, or finished results of its own
    (the SQL sources: one row each); ``remedy`` is for a check that raised; ``after``:
    checks to wait for — a failed one makes this a ``skip`` unless ``soft``."""

    name: str
    run: Callable[[], Found | list[CheckResult]]
    remedy: str
    critical: bool = True
    after: tuple[str, ...] = ()
    soft: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S


def _timed(name: str, critical: bool, remedy: str, work: Callable[[], Found]) -> CheckResult:
    started = time.perf_counter()
    try:
        found = work()
    except Exception as exc:
        found = Found("fail", reason(exc), remedy)
    return _result(name, critical, found, time.perf_counter() - started)


def _result(name: str, critical: bool, found: Found, seconds: float) -> CheckResult:
    return CheckResult(
        name=name,
        verdict=found.verdict,
        detail=found.detail,
        remedy=None if found.verdict == "ok" else found.remedy,
        seconds=seconds,
        critical=critical and found.blocking,
        data=found.data,
    )


def plan(engine: Engine, *, timeout_s: float = DEFAULT_TIMEOUT_S, providers: bool = True) -> list[Spec]:
    """The checks the settings call for, in the order the report shows them."""
    settings = engine.settings
    specs = [
        Spec(
            "catalog",
            lambda: checks.check_catalog(settings, timeout_s),
            checks.CATALOG_REMEDY,
            timeout_s=timeout_s + 5,
        ),
        Spec(
            "index",
            lambda: checks.check_index(engine),
            checks.index_remedy(settings),
            after=("catalog",),
            timeout_s=LOAD_TIMEOUT_S,
        ),
        Spec(
            "embedder",
            lambda: checks.check_embedder(engine),
            checks.embed_remedy(settings),
            after=("index",),
            soft=True,
            timeout_s=LOAD_TIMEOUT_S,
        ),
    ]
    if providers:
        specs.extend(_provider_specs(engine, timeout_s))
    if checks.redis_needed(settings):
        specs.append(Spec("redis", lambda: checks.check_redis(settings, timeout_s), checks.REDIS_REMEDY))
    if settings.index.backend == "milvus":
        specs.append(
            Spec(
                "milvus",
                lambda: checks.check_milvus(settings, timeout_s),
                checks.MILVUS_REMEDY,
                timeout_s=timeout_s + 5,
            )
        )
    specs.append(
        Spec(
            "sql_sources",
            lambda: _sql_sources(engine, timeout_s),
            "the SQL sources could not be listed from the catalog",
            critical=False,
            after=("catalog",),
            timeout_s=LOAD_TIMEOUT_S,
        )
    )
    if settings.offline:
        from hanrag.ops.offline import doctor_check

        specs.append(
            Spec(
                "offline",
                lambda: doctor_check(engine),
                "list the hosts in offline_allow",
                critical=False,
                after=("catalog",),
                soft=True,
            )
        )
    specs.append(Spec("disk", lambda: checks.check_disk(settings), "check the data directory's volume"))
    specs.append(
        Spec("data_dir", lambda: checks.check_data_dir(settings), f"check {settings.data_dir} and its volume")
    )
    if settings.resolved_catalog_url.startswith("postgresql"):
        specs.append(
            Spec(
                "clock",
                lambda: checks.check_clock(settings, timeout_s),
                checks.CATALOG_REMEDY,
                critical=False,
                after=("catalog",),
            )
        )
    return specs


def _provider_specs(engine: Engine, timeout_s: float) -> list[Spec]:
    try:
        registry = engine.llm_registry
    except Exception as exc:  # a provider that cannot be built (a missing SDK, a bad kind)
        error = reason(exc)

        def broken() -> Found:
            return Found(
                "fail", error, "fix llm.providers (see the detail) and reload the models", blocking=False
            )

        return [Spec("providers", broken, "fix llm.providers", critical=False)]
    specs = []
    for handle in registry.providers:
        limit = min(timeout_s * 3, handle.config.connect_timeout_s + handle.config.timeout_s)

        def run(handle: Any = handle, limit: float = limit) -> Found:
            return checks.check_provider(handle, engine.settings, limit)

        specs.append(
            Spec(
                f"provider:{handle.name}",
                run,
                f"check provider {handle.name}",
                critical=False,
                timeout_s=limit + 5,
            )
        )
    return specs


def _sql_sources(engine: Engine, timeout_s: float) -> list[CheckResult]:
    results = []
    for row in checks.sql_sources(engine):

        def run(row: Any = row) -> Found:
            return checks.check_sql_source(row, timeout_s)

        results.append(_timed(f"sql:{row.name}", False, checks.sql_remedy(row.name), run))
    return results


def run_checks(specs: list[Spec]) -> list[CheckResult]:
    """Run ``specs`` in threads as their prerequisites finish; the results in plan order."""
    names = {spec.name for spec in specs}
    results: dict[str, list[CheckResult]] = {}
    outcomes: dict[str, tuple[Found | list[CheckResult], float]] = {}
    started: dict[str, float] = {}
    pending = list(specs)
    running: dict[str, Spec] = {}
    changed = threading.Condition()

    def work(spec: Spec) -> None:
        begin = time.perf_counter()
        try:
            outcome: Found | list[CheckResult] = spec.run()
        except Exception as exc:
            outcome = Found("fail", reason(exc), spec.remedy)
        with changed:
            outcomes[spec.name] = (outcome, time.perf_counter() - begin)
            changed.notify_all()

    with changed:
        while pending or running:
            progress = False
            for spec in list(pending):
                needed = [name for name in spec.after if name in names]
                if any(name not in results for name in needed):
                    continue
                pending.remove(spec)
                progress = True
                failed = [n for n in needed if any(r.verdict in ("fail", "skip") for r in results[n])]
                if failed and not spec.soft:
                    note = Found("skip", f"not checked: {failed[0]} failed", f"fix {failed[0]} first")
                    results[spec.name] = [_result(spec.name, spec.critical, note, 0.0)]
                    continue
                started[spec.name] = time.perf_counter()
                running[spec.name] = spec
                threading.Thread(target=work, args=(spec,), name=f"doctor-{spec.name}", daemon=True).start()
            now = time.perf_counter()
            for name, spec in list(running.items()):
                if name in outcomes:
                    outcome, seconds = outcomes[name]
                    if isinstance(outcome, Found):
                        results[name] = [_result(name, spec.critical, outcome, seconds)]
                    else:
                        results[name] = outcome
                elif now - started[name] > spec.timeout_s:
                    # The thread is left to finish on its own (daemon): its answer is too late.
                    late = Found("fail", f"no answer within {spec.timeout_s:g} s", spec.remedy)
                    results[name] = [_result(name, spec.critical, late, now - started[name])]
                else:
                    continue
                del running[name]
                progress = True
            if progress or not running:
                continue
            deadline = min(started[n] + running[n].timeout_s for n in running)
            changed.wait(timeout=max(deadline - time.perf_counter(), 0.0) + 0.01)
    return [result for spec in specs for result in results.get(spec.name, [])]


def run_doctor(
    engine: Engine, *, timeout_s: float = DEFAULT_TIMEOUT_S, providers: bool = True
) -> DoctorReport:
    """Every check the settings call for, run now."""
    started_at = datetime.now(UTC)
    began = time.perf_counter()
    results = run_checks(plan(engine, timeout_s=timeout_s, providers=providers))
    return DoctorReport(results=results, started_at=started_at, seconds=time.perf_counter() - began)
