"""Ray Serve deployment: the same FastAPI app in N replicas behind Ray's HTTP proxy.

Each replica builds its own app (and engine) from the ``HANRAG_*`` environment,
which is handed to every replica through the runtime environment. Nothing that
must agree between replicas lives in process memory: sessions, jobs and users
are in the catalog, rate limits in Redis, and the local index follows the other
processes' writes through SQLite (use Milvus for several hosts).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from hanrag.settings import Settings


def build_app() -> Any:
    from hanrag.api.app import create_app

    return create_app()


def run(settings: Settings, *, host: str, port: int, replicas: int) -> None:
    import ray
    from ray import serve

    env = {k: v for k, v in os.environ.items() if k.startswith("HANRAG_")}
    env["HANRAG_DATA_DIR"] = str(settings.data_dir.resolve())
    ray.init(include_dashboard=False, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
    serve.start(http_options={"host": host, "port": port})
    deployment: Any = serve.deployment(
        serve.ingress(build_app)(),
        name="hanrag",
        num_replicas=replicas,
        # Replicas spend their time in native code (embedding, Kiwi); let them share cores.
        ray_actor_options={"num_cpus": 0},
    )
    serve.run(deployment.bind(), name="hanrag", route_prefix="/", blocking=False)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    serve.shutdown()
    ray.shutdown()
