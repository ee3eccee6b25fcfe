"""Job commands: ``hanrag worker`` and ``hanrag jobs list|show|cancel|pause|resume``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from hanrag.cli.common import console, engine_session, print_json, run, settings
from hanrag.errors import NotFoundError

jobs_app = typer.Typer(help="Background jobs: list, show, cancel, pause, resume.", no_args_is_help=True)


def _on_queue(queue: Any, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run one queue call from this short-lived process, then close the queue."""

    async def send() -> Any:
        try:
            return await work()
        finally:
            await queue.stop()

    return asyncio.run(send())


def enqueue(engine: Any, record: Any) -> Any:
    """Queue a job from a short-lived process: Redis directly, or the job table that the
    server's in-process worker polls."""
    from hanrag.jobs.factory import build_queue

    queue = build_queue(engine)
    if engine.settings.jobs.queue == "redis":
        return _on_queue(queue, lambda: queue.enqueue(record))
    record.max_attempts = engine.settings.jobs.max_attempts
    queue.store.create(record)
    return record


def _store(engine: Any) -> Any:
    from hanrag.jobs.factory import build_queue

    return build_queue(engine).store


@jobs_app.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option("--state")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent jobs."""

    def work() -> list[dict[str, Any]]:
        with engine_session() as engine:
            return [r.public() for r in _store(engine).list_jobs(limit=limit, state=state)]

    rows = run(work)
    if as_json:
        print_json(rows)
        return
    table = Table("job", "kind", "state", "attempts", "progress", "created", title=f"{len(rows)} jobs")
    for row in rows:
        progress = row["progress"]
        done = f"{progress.get('files_done', '')}/{progress.get('files_total', '')}" if progress else ""
        table.add_row(
            row["job_id"], row["kind"], row["state"], str(row["attempts"]), done, row["created_at"][:19]
        )
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument()]) -> None:
    """One job as JSON."""

    def work() -> dict[str, Any]:
        with engine_session() as engine:
            record = _store(engine).get(job_id)
            if record is None:
                raise NotFoundError(f"no job {job_id!r}", code="job_not_found")
            public: dict[str, Any] = record.public()
            return public

    print_json(run(work))


def _control(job_id: str, control: str | None) -> None:
    from hanrag.jobs.control import apply_control
    from hanrag.jobs.factory import build_queue

    def work() -> None:
        with engine_session() as engine:
            queue = build_queue(engine)
            record = queue.store.get(job_id)
            if record is None:
                raise NotFoundError(f"no job {job_id!r}", code="job_not_found")
            _on_queue(queue, lambda: apply_control(queue, record, control))

    run(work)
    console.print(f"{job_id}: {control or 'resume'} requested")


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument()]) -> None:
    _control(job_id, "cancel")


@jobs_app.command("pause")
def jobs_pause(job_id: Annotated[str, typer.Argument()]) -> None:
    _control(job_id, "pause")


@jobs_app.command("resume")
def jobs_resume(job_id: Annotated[str, typer.Argument()]) -> None:
    _control(job_id, None)


def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Exit when the queue is empty.")] = False,
) -> None:
    """Run a Redis (arq) job worker: any number of these on any hosts (needs jobs.queue=redis)."""
    from hanrag.errors import ConfigError
    from hanrag.jobs.redis_queue import run_worker

    loaded = run(settings)
    if loaded.jobs.queue != "redis" or not loaded.redis_url:

        def refuse() -> None:
            raise ConfigError(
                "hanrag worker needs HANRAG_JOBS__QUEUE=redis and HANRAG_REDIS_URL "
                "(the in-process queue runs inside 'hanrag serve')",
                code="invalid_settings",
            )

        run(refuse)
    from hanrag.answer.prompts import load_prompts
    from hanrag.ops.offline import check_offline

    run(lambda: check_offline(loaded))  # offline: a URL pointing elsewhere is refused before taking jobs
    run(lambda: load_prompts(loaded.prompts))  # a bad operator prompt file: refused before taking jobs
    run_worker(loaded, burst=burst)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.command("worker")(worker)
