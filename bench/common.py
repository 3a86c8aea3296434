"""Shared helpers: the Procfile's processes on a private database and Redis, load, figures.

The stack is started exactly as ``tests/integration/harness.py`` does it (``run_release``, then
the Procfile's lines through ``orchestrator.local.processes.Process``), with three differences that
keep a benchmark to itself: the worker also imports ``bench.celery_tasks`` (the baselines) and
gets its own node name, beat keeps its schedule file in the run's temporary folder, and the
robot is ``bench.responder`` (or the simulator) on a free port.

Redis: a private ``redis-server`` on a free port by default (``--redis private``). The report
channel ``orchestrator:reports`` is a server-wide pub/sub channel, not scoped to a database
number, so on the shared server every benchmark report would also reach every other worker
listening there (and theirs ours), and ``INFO stats`` would count everybody's commands.
``--redis shared`` uses databases 5-8 of 127.0.0.1:6379 instead, flushed before and after.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from orchestrator.celery_app import broker_conf
from orchestrator.config import settings_from_mapping
from orchestrator.local import processes
from orchestrator.local.processes import (
    Process,
    bin_path,
    free_port,
    private_redis,
    redis_answers,
    wait_until,
)
from orchestrator.local.rabbitmq import PrivateRabbitMQ
from orchestrator.local.robot_simulator import signed_headers
from orchestrator.rendezvous import poller_key
from orchestrator.signing import job_callback_secret

API_TOKEN = "bench-api-token"
ROBOT_TOKEN = "bench-robot-token"
MASTER_SECRET = "bench-master-secret"
FINAL = ("completed", "failed", "cancelled")
PG_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SHARED_REDIS = "redis://127.0.0.1:6379"
BROKERS = ("redis", "rabbitmq")
# The broker of this run (``--broker``): Redis (the rendezvous, and the broker by default) or
# a private RabbitMQ node started per stack (Redis stays the rendezvous).
BROKER = "redis"


# ``--traces``: every stack exports traces (OTLP/HTTP) to a stand-in collector (otlp_sink).
TRACES = False


def set_traces(on: bool) -> None:
    global TRACES
    TRACES = on


def set_broker(name: str) -> None:
    global BROKER
    if name not in BROKERS:
        raise ValueError(f"unknown broker {name!r}")
    BROKER = name


REDIS_DBS = {"wake_latency": 5, "free_waiting": 6, "throughput": 7, "callbacks": 8}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- output -----------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("celery", "kombu", "redis", "flask", "gunicorn", "sqlalchemy", "psycopg"):
        try:
            found[name] = version(name)
        except Exception:  # pragma: no cover - a missing distribution is only reported
            found[name] = "?"
    return found


VERSIONS = _versions()
_server_versions: dict[str, str] = {}
_out_files: list[Any] = []


def add_output(path: str) -> None:
    """Also append every JSON line to this file."""
    _out_files.append(Path(path).open("a"))  # noqa: SIM115 - closed at exit by the runtime


def emit(bench: str, case: str, **figures: Any) -> dict[str, Any]:
    """Print one JSON line of figures with the machine's cores and the versions."""
    line = {
        "bench": bench,
        "case": case,
        "broker": BROKER,
        "traces": "on" if TRACES else "off",
        **figures,
        "cores": os.cpu_count(),
        "versions": {**VERSIONS, **_server_versions},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text_line = json.dumps(line, sort_keys=False)
    print(text_line, flush=True)
    for handle in _out_files:
        handle.write(text_line + "\n")
        handle.flush()
    return line


def note(message: str) -> None:
    """Progress for a person, on stderr, so stdout stays JSON lines."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: Iterable[float], digits: int = 2) -> dict[str, Any]:
    """Return n, p50, p95, p99, max and mean of the values (milliseconds in, milliseconds out)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 0.50), digits),
        "p95": round(percentile(ordered, 0.95), digits),
        "p99": round(percentile(ordered, 0.99), digits),
        "max": round(ordered[-1], digits),
        "mean": round(sum(ordered) / len(ordered), digits),
    }


def ratio(value: float, base: float) -> float | None:
    return round(value / base, 3) if base else None


# --- infrastructure ---------------------------------------------------------------------


class RedisProvider:
    """A private redis-server (default) or databases 5-8 of the shared one."""

    def __init__(self, mode: str, log_dir: Path) -> None:
        self.mode = mode
        self.process: Process | None = None
        if mode == "private":
            started = private_redis(log_dir)
            if started is None:
                note("no redis-server binary: falling back to the shared Redis (databases 5-8)")
                self.mode = "shared"
            else:
                url, self.process = started
                self.base = url.rsplit("/", 1)[0]
        if self.mode == "shared":
            self.base = SHARED_REDIS
            if not redis_answers(f"{self.base}/5"):
                raise SystemExit("bench: no Redis at 127.0.0.1:6379")
        info = redis.Redis.from_url(f"{self.base}/0").info("server")
        _server_versions["redis_server"] = str(info.get("redis_version"))

    def url(self, db: int) -> str:
        if self.mode == "shared" and db not in (5, 6, 7, 8):
            raise ValueError("only Redis databases 5-8 may be used on the shared server")
        return f"{self.base}/{db}"

    def flush(self, db: int) -> None:
        client = redis.Redis.from_url(self.url(db))
        try:
            client.flushdb()
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@contextlib.contextmanager
def postgres_database(prefix: str = "bench") -> Iterator[str]:
    """Create a fresh PostgreSQL database; yield its URL (postgres:// form); drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        _server_versions["postgresql"] = str(conn.execute(text("SHOW server_version")).scalar())
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgres://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- process usage (/proc) ----------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """Return pid and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def memory_mb(pids: Iterable[int]) -> dict[str, float]:
    """RSS (shared pages counted in every process) and PSS (shared pages split) in MB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return {"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, every process of every user (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def signed_event(
    master: str, job_id: str, event_type: str, data: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """Body and headers of a robot event for the job, signed with its per-job secret."""
    body = json.dumps({"type": event_type, "data": data}, separators=(",", ":"))
    return body, signed_headers(job_callback_secret(master, job_id), body)


_GROUPS = (
    ("postgres", "postgres"),
    ("redis", "redis-server"),
    ("web", "-m webapp"),
    ("web", "bench.bare_web"),
    ("worker", " worker "),
    ("beat", " beat "),
    ("robot", "bench.responder"),
    ("bench", "-m bench"),
)


def cpu_by_group() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, summed by role."""
    totals: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
            group = next((g for g, marker in _GROUPS if marker in f" {command} "), "other")
            totals[group] = totals.get(group, 0.0) + seconds
    return totals


class MachineLoad:
    """Share of both cores busy (anyone's work) over a span: how noisy the machine was.

    ``cpu_ms_per(n)`` splits the span's CPU by role (PostgreSQL, Redis, web, worker, beat,
    robot stand-in, the benchmark's own load generator, other) per unit of work: where the
    time of one job or one request goes.
    """

    def __init__(self) -> None:
        self.groups0 = cpu_by_group()
        self.busy0, self.total0 = machine_cpu()

    def close(self) -> float:
        busy, total = machine_cpu()
        self.groups1 = cpu_by_group()
        return round(100 * (busy - self.busy0) / max(total - self.total0, 1), 1)

    def cpu_ms_per(self, units: int) -> dict[str, float]:
        """After close(): CPU ms per unit by role, biggest first (processes alive at both ends)."""
        spent = {
            group: 1000 * (self.groups1[group] - self.groups0.get(group, 0.0)) / max(units, 1)
            for group in self.groups1
        }
        ordered = sorted(spent.items(), key=lambda kv: -kv[1])
        result = {group: round(ms, 2) for group, ms in ordered if ms > 0.005}
        result["total"] = round(sum(spent.values()), 2)
        return result


class Window:
    """CPU of a process tree and Redis commands over a measured span of time."""

    def __init__(self, pid: int, client: redis.Redis) -> None:
        self.pid, self.client = pid, client
        self.pids = process_tree(pid)
        self.t0 = time.monotonic()
        self.cpu0 = cpu_seconds(self.pids)
        self.cmd0 = int(client.info("stats")["total_commands_processed"])

    def close(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pids) - self.cpu0
        stats = self.client.info("stats")
        commands = int(stats["total_commands_processed"]) - self.cmd0 - 1  # minus this INFO
        mem = self.client.info("memory")
        main, pool = memory_mb([self.pid]), memory_mb(p for p in self.pids if p != self.pid)
        return {
            "seconds": round(elapsed, 1),
            "cpu_pct_of_core": round(100 * cpu / elapsed, 2),
            **memory_mb(self.pids),
            "main_pss_mb": main["pss_mb"],
            "pool_pss_mb": pool["pss_mb"],
            "redis_cmds_per_s": round(commands / elapsed, 1),
            "redis_used_memory_mb": round(int(mem["used_memory"]) / 2**20, 1),
        }


# --- profiles (py-spy) --------------------------------------------------------------------

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@contextlib.contextmanager
def profiled(
    pid: int, label: str, limit_s: float = 300, idle: bool = False
) -> Iterator[Path | None]:
    """With BENCH_PROFILE=1, record the process tree with py-spy while the block runs.

    ``idle=True`` also samples threads blocked on I/O: wall time, for latency questions.

    Writes collapsed stacks (``--format raw``) to bench/profiles/<label>.txt.gz and a summary
    (``bench.profile_summary``) beside it; a missing py-spy (``pip install py-spy``) only skips
    the profile.
    """
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not os.environ.get("BENCH_PROFILE") or spy is None:
        yield None
        return
    PROFILE_DIR.mkdir(exist_ok=True)
    out = PROFILE_DIR / f"{label}.txt"
    command = [spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    command += ["--rate", "200", "--format", "raw", "--output", str(out)]
    command += ["--duration", str(int(limit_s))] + (["--idle"] if idle else [])
    spy_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let py-spy attach
    try:
        yield out
    finally:
        spy_process.send_signal(signal.SIGINT)
        try:
            spy_process.wait(30)
        except subprocess.TimeoutExpired:
            spy_process.kill()
        if out.exists():
            from .profile_summary import summarize

            (PROFILE_DIR / f"{label}.summary.txt").write_text(summarize(str(out), 30) + "\n")
            subprocess.run(["gzip", "-9", "-f", str(out)], check=False)
        note(f"profile of {label} in {out}.gz (summary: {label}.summary.txt)")


# --- the stack ----------------------------------------------------------------------------


class Stack(processes.Stack):
    """release, web, worker, beat and a stand-in robot on a fresh database and Redis DB."""

    def __init__(
        self,
        name: str,
        redis_mode: str,
        robot: str = "accept",
        processes: Sequence[str] = ("robot", "web", "worker", "beat"),
        robot_args: str = "",
        robots: Sequence[str] = (),
        **env: str,
    ) -> None:
        super().__init__(
            Path(tempfile.mkdtemp(prefix=f"bench-{name}-")), {}, free_port(), free_port(), robots
        )
        self.name = name
        self.robot_mode = robot
        self.robot_args = robot_args  # appended to the robot's command (later options win)
        self.wanted = processes
        self.extra_env = env
        self.redis_mode = redis_mode
        self.redis_db = REDIS_DBS.get(name, 5)
        self._exit = contextlib.ExitStack()
        self._local = threading.local()
        self.failed = False

    # lifecycle

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.failed = True
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        self.redis_provider = RedisProvider(self.redis_mode, self.log_dir)
        self._exit.callback(self.redis_provider.stop)
        self.redis_url = self.redis_provider.url(self.redis_db)
        self.redis_provider.flush(self.redis_db)
        self._exit.callback(self.redis_provider.flush, self.redis_db)
        self.redis = redis.Redis.from_url(self.redis_url)
        self._exit.callback(self.redis.close)
        self.broker_url = self.redis_url
        broker_env = {}
        if BROKER == "rabbitmq":
            # Its own folder outside pytest's and ours: the node runs as the rabbitmq user.
            base = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-rabbitmq-"))
            base.chmod(0o755)
            self._exit.callback(shutil.rmtree, base, True)
            node = PrivateRabbitMQ(base, consumer_timeout_ms=60_000)
            self._exit.callback(node.stop)
            node.start()
            self.rabbitmq = node
            self.broker_url = broker_env["CELERY_BROKER_URL"] = node.url
        if TRACES:
            from .otlp_sink import OtlpSink

            self.otlp_sink = sink = OtlpSink()
            self._exit.callback(
                lambda: emit(self.name, "traces_exported", requests=sink.requests, bytes=sink.bytes)
            )
            self._exit.callback(sink.stop)
            broker_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        self.database_url = self._exit.enter_context(postgres_database(f"bench_{self.name}"))
        self.env.update(
            {
                "PATH": bin_path(),
                "APP_ENV": "production",
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "ROBOT_URL": self.robot,
                "ROBOT_API_TOKEN": ROBOT_TOKEN,
                "ROBOT_CALLBACK_SECRET": MASTER_SECRET,
                "PUBLIC_URL": self.base,
                "API_TOKENS": API_TOKEN,
                "PORT": str(self.web_port),
                # Count every request as deployed (the limiter's Redis round trip stays in
                # the figures), but never throttle the load generator.
                "RATE_LIMIT_API": "1000000/minute",
                "RATE_LIMIT_CALLBACKS": "1000000/minute",
                **broker_env,
                **self.robots_env(ROBOT_TOKEN),
                **self.extra_env,
            }
        )
        self._exit.callback(self.stop)
        self.start(self.wanted)
        self.engine: Engine = create_engine(
            self.database_url.replace("postgres://", "postgresql+psycopg://", 1)
        )
        self._exit.callback(self.engine.dispose)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.failed = True
        try:
            self._exit.close()
        finally:
            if self.failed or os.environ.get("BENCH_KEEP_LOGS"):
                note(f"{self.name}: logs kept in {self.log_dir}")
            else:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def command(self, name: str) -> tuple[str, dict[str, str]]:
        if name == "robot" or name.startswith("robot-"):
            port = self.simulator_port(name)
            if self.robot_mode == "simulator":
                command = (
                    f"python -m orchestrator.local.robot_simulator --port {port} "
                    f"--item-delay 0 --token {ROBOT_TOKEN} {self.robot_args}"
                ).rstrip()
            else:
                command = (
                    f"python -m bench.responder --port {port} --mode {self.robot_mode} "
                    f"{self.robot_args}"
                ).rstrip()
            return command, self.env
        command, env = super().command(name)
        if name == "worker":
            node = f"bench-{self.name}-{uuid.uuid4().hex[:6]}@%h"
            command += f" --hostname={node} --include=bench.celery_tasks"
        elif name == "beat":
            schedule = f"--schedule={self.log_dir / 'beat-schedule'}"
            if "--schedule" in command:
                command = re.sub(r"--schedule[= ]\S+", schedule, command)
            else:
                command += f" {schedule}"
        return command, env

    def worker_pid(self) -> int:
        return self.processes["worker"].popen.pid

    # HTTP

    def http(self) -> requests.Session:
        """This thread's keep-alive session."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self._local.session = session
        return session

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_TOKEN}"}

    def submit(
        self,
        items: int = 1,
        base: str | None = None,
        robot: str | None = None,
        priority: int | None = None,
        **pedido: Any,
    ) -> str:
        run = uuid.uuid4().hex[:8]
        orders = [
            {"orderId": f"B-{run}-{n}", "pedidoInput": {"n": n, **pedido}} for n in range(items)
        ]
        body: dict[str, Any] = {"orders": orders}
        if robot is not None:
            body["robot"] = robot
        if priority is not None:
            body["priority"] = priority
        for _attempt in range(20):
            answer = self.http().post(
                f"{base or self.base}/api/jobs",
                json=body,
                headers=self.auth(),
                timeout=30,
            )
            if answer.status_code != 429:
                break
            time.sleep(float(answer.headers.get("Retry-After") or 1))
        if answer.status_code != 202:
            raise RuntimeError(f"submit answered {answer.status_code}: {answer.text[:300]}")
        return str(answer.json()["id"])

    def submit_many(self, count: int, items: int = 1, threads: int = 6) -> list[str]:
        """Submit ``count`` jobs from ``threads`` threads; return their ids in order."""
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda _: self.submit(items), range(count)))

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.http().get(f"{self.base}/api/jobs/{job_id}", headers=self.auth(), timeout=30)
        answer.raise_for_status()
        return answer.json()

    def signed(self, job_id: str, event_type: str, data: dict[str, Any]) -> tuple[str, dict]:
        """Return the body and headers of an event signed as the robot signs it."""
        return signed_event(MASTER_SECRET, job_id, event_type, data)

    def send_event(
        self, job_id: str, event_type: str, data: dict[str, Any], session: Any = None
    ) -> requests.Response:
        body, headers = self.signed(job_id, event_type, data)
        return (session or self.http()).post(
            f"{self.base}/api/robot/jobs/{job_id}/events", data=body, headers=headers, timeout=30
        )

    def dispatched_at(self, job_id: str) -> float | None:
        answer = self.http().get(f"{self.robot}/_bench/dispatch", params={"job": job_id}, timeout=5)
        return answer.json()["t"]

    def robot_stats(self) -> dict[str, Any]:
        return self.http().get(f"{self.robot}/_bench/stats", timeout=5).json()

    # database and Redis

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def waiting_count(self, job_ids: Iterable[str] | None = None) -> int:
        """Jobs whose waiting step has started (their poller token is in Redis)."""
        if job_ids is not None:
            keys = [poller_key(j) for j in job_ids]
            total = 0
            for start in range(0, len(keys), 1000):
                total += int(self.redis.exists(*keys[start : start + 1000]))
            return total
        return sum(1 for _ in self.redis.scan_iter("orchestrator:job:*:poller", count=1000))

    def open_jobs(self, job_ids: Iterable[str]) -> set[str]:
        """Those of the jobs that are not final yet (one query)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id FROM jobs WHERE id = ANY(:ids) AND status = ANY(:open)"),
                {"ids": list(job_ids), "open": ["pending", "processing"]},
            )
            return {row[0] for row in rows}

    def finished_at(self, job_ids: Sequence[str]) -> dict[str, float]:
        """When each final one of the jobs finished (Unix seconds), from the database."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, EXTRACT(EPOCH FROM finished_at) FROM jobs WHERE id = ANY(:ids)"),
                {"ids": list(job_ids)},
            ).all()
        return {row[0]: float(row[1]) for row in rows if row[1] is not None}

    def job_times(self, job_ids: Sequence[str]) -> list[Any]:
        """(status, created_at, finished_at) of each job, times in Unix seconds."""
        with self.engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT status, EXTRACT(EPOCH FROM created_at), "
                    "EXTRACT(EPOCH FROM finished_at) FROM jobs WHERE id = ANY(:ids)"
                ),
                {"ids": list(job_ids)},
            ).all()

    def wait_waiting(self, job_ids: Sequence[str], timeout: float) -> None:
        wait_until(
            lambda: self.waiting_count(job_ids) == len(job_ids),
            timeout,
            f"{len(job_ids)} jobs to be waiting",
            interval=0.5,
        )

    def celery_client(self) -> Celery:
        """A producer on the same broker and queue as the web process."""
        app = Celery("bench-client", broker=self.broker_url, set_as_current=False)
        app.config_from_object("celeryconfig")
        settings = settings_from_mapping({"celery_broker_url": self.broker_url})
        app.conf.update(imports=(), **broker_conf(settings))
        return app


def quiet_until(
    pid: int, timeout: float, below_pct: float = 20.0, span: float = 2.0
) -> float | None:
    """Wait until the process tree uses less than ``below_pct`` of a core over ``span``."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        pids = process_tree(pid)
        before = cpu_seconds(pids)
        time.sleep(span)
        last = 100 * (cpu_seconds(pids) - before) / span
        if last < below_pct:
            return last
    return last


def paced(count: int, interval: float, stop_after: float) -> Iterator[int]:
    """Yield 0..count-1, one every ``interval`` seconds, never for longer than ``stop_after``."""
    start = time.monotonic()
    for n in range(count):
        target = start + n * interval
        now = time.monotonic()
        if now - start > stop_after:
            return
        if target > now:
            time.sleep(target - now)
        yield n


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    value = fn()
    return value, time.monotonic() - t0
