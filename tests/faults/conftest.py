"""Fault-suite fixtures: the Procfile's processes on real Redis and databases, broken on purpose.

Each scenario starts its own ``Rig`` (harness ``System`` plus probes) so that what one test
breaks cannot leak into the next. Shared Redis: databases 1-4 only, flushed before and after.
Measured figures (``record``, tests/figures.py) are printed at the end of the run;
docs/reliability.md quotes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests import REDIS_PORT
from tests.conftest import PG_ADMIN_URL, fresh_postgres_database
from tests.figures import record  # noqa: F401 (the scenarios import it from here)
from tests.integration.harness import API_TOKEN, System, orders

from .tools import Db, RestartableRedis, TcpProxy, wait_until

SHARED_REDIS_DBS = (1, 2, 3, 4)
_free_dbs = list(SHARED_REDIS_DBS)
_db_lock = threading.Lock()


def _flush(db: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=db)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def shared_redis_db() -> Iterator[int]:
    """Lend one of the shared Redis databases 1-4, flushed before and after."""
    with _db_lock:
        if not _free_dbs:
            raise RuntimeError("all four shared Redis databases are in use")
        db = _free_dbs.pop(0)
    _flush(db)
    try:
        yield db
    finally:
        _flush(db)
        with _db_lock:
            _free_dbs.append(db)


@dataclass
class Rig:
    """A running system, its log directory and the handles to break it."""

    system: System
    db: Db
    log_dir: Path
    database_url: str
    redis: RestartableRedis | None = None
    proxy: TcpProxy | None = None

    @property
    def kind(self) -> str:
        return "sqlite" if self.database_url.startswith("sqlite") else "postgres"

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """wait_until, with every process's log in the failure message."""
        try:
            return wait_until(check, timeout, what, interval=0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.system.logs()}") from None

    def submit_many(
        self,
        count: int,
        items: int = 1,
        threads: int = 8,
        robot: str | None = None,
        **pedido: Any,
    ) -> list[str]:
        """Submit ``count`` jobs concurrently over HTTP (for ``robot``); return their ids."""
        url = f"{self.system.base}/api/jobs"
        headers = {"Authorization": f"Bearer {API_TOKEN}"}

        def one(_: int) -> str:
            body: dict[str, Any] = {"orders": orders(items, **pedido)}
            if robot is not None:
                body["robot"] = robot
            answer = requests.post(url, json=body, headers=headers, timeout=30)
            assert answer.status_code == 202, answer.text
            return str(answer.json()["id"])

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(count)))

    def robot_dispatches(self, robot: str | None = None) -> dict[str, int]:
        return dict(self.system.robot_stats(robot)["dispatches"])


@contextmanager
def rig(
    log_dir: Path,
    *,
    database: str = "sqlite",
    private_redis: bool = False,
    redis_password: str | None = None,
    cuttable_database: bool = False,
    hooks: bool = True,
    names: Iterable[str] = ("robot", "web", "worker", "beat"),
    robot_args: str = "",
    database_password: str | None = None,
    redis_url: str | None = None,
    robots: tuple[str, ...] = (),
    **env: str,
) -> Iterator[Rig]:
    """Start a system for one scenario; stop it, drop its database and flush its Redis after."""
    with ExitStack() as stack:
        proxy = None
        if database == "postgres":
            url = direct = stack.enter_context(fresh_postgres_database(PG_ADMIN_URL, migrate=False))
            if cuttable_database:
                proxy = TcpProxy(5432)
                stack.callback(proxy.close)
                url = url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
            if database_password:
                # Trust authentication ignores it; the processes must still never log it.
                url = url.replace("postgres@", f"postgres:{database_password}@")
        else:
            url = direct = f"sqlite:///{log_dir / 'orchestrator.db'}"
        private = None
        redis_db = 0
        if redis_url:
            pass  # the caller's own Redis (a Sentinel group): nothing to lend or flush
        elif private_redis or redis_password:
            private = RestartableRedis(log_dir, password=redis_password).start()
            stack.callback(private.stop)
        else:
            redis_db = stack.enter_context(shared_redis_db())
        system = System(
            log_dir,
            url,
            redis_db,
            redis_url=redis_url or (private.url if private else None),
            robots=robots,
            **{"HOUSEKEEPING_INTERVAL_SECONDS": "1", "FAULT_HOOK_DIR": str(log_dir), **env},
        )
        system.extra_args["beat"] = f"--schedule={log_dir / 'celerybeat-schedule'}"
        if hooks:
            system.extra_args["worker"] = "--include tests.faults.hooks"
        if robot_args:
            for name in ("robot", *(f"robot-{robot}" for robot in robots)):
                system.extra_args[name] = robot_args
        probe = Db(direct)  # never through the proxy: the probe must see through a cut
        stack.callback(probe.close)
        stack.callback(system.stop)
        system.start(names)
        yield Rig(system, probe, log_dir, url, private, proxy)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
