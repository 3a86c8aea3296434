"""Tools to break things on purpose: a cuttable TCP proxy, a restartable Redis, DB probes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from orchestrator import lifecycle
from orchestrator.config import load_settings, normalize_database_url
from orchestrator.db import session_scope
from orchestrator.local.processes import Process, bin_path, free_port, redis_answers, wait_until
from orchestrator.signing import job_callback_secret
from tests.integration.harness import MASTER_SECRET

FINAL = ("completed", "failed", "cancelled")


def claim_dispatch(env: dict[str, str], job_id: str) -> None:
    """Claim a job's dispatch as a worker would, for suites that run no worker: the robot's
    callbacks are for dispatched jobs (CONTRACT §5: 409 for a job never claimed)."""
    settings = load_settings(env)
    with session_scope(settings.database_url) as session:
        assert lifecycle.claim_dispatch(session, job_id, settings) is not None


class TcpProxy:
    """Forward a loopback port to a target; ``cut()`` drops every connection and refuses new ones.

    Put between the processes and PostgreSQL it plays a database that went away (a restart, a
    network cut) without touching the shared server.
    """

    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", listen_host: str = "127.0.0.1"
    ) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server((listen_host, 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._cut = threading.Event()
        self._stop = threading.Event()
        self.refused = 0
        self.dropped = 0
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self._cut.is_set():
                self.refused += 1
                self._close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until ``restore()``."""
        self._cut.set()
        with self._lock:
            victims = list(self._open)
        self.dropped += len(victims) // 2
        for sock in victims:
            self._close(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._accepter.join(5)
        self._server.close()
        for thread in self._threads:
            thread.join(5)


class RestartableRedis:
    """A private redis-server that keeps nothing on disk, restartable on the same port."""

    def __init__(self, log_dir: Path, password: str | None = None, host: str = "127.0.0.1") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.log_dir = log_dir
        self.port = free_port()
        self.password = password
        self.host = host
        self.process: Process | None = None
        self.generation = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> RestartableRedis:
        self.generation += 1
        command = f"{self.binary} --port {self.port} --bind {self.host} --save '' --appendonly no"
        if self.host != "127.0.0.1":
            # Bound to a test network's private address only; protected mode would refuse it.
            command += " --protected-mode no"
        if self.password:
            command += f" --requirepass {self.password}"
        self.process = Process(
            f"redis-{self.generation}", command, {"PATH": bin_path()}, self.log_dir
        )
        wait_until(lambda: redis_answers(self.url), 15, "the private redis-server")
        return self

    def kill(self) -> None:
        """SIGKILL it: every key, queued message and pub/sub subscription is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class Db:
    """Read-only probes of a system's database, straight from the test process."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(normalize_database_url(url), poolclass=NullPool)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def job_statuses(self) -> Counter[str]:
        return Counter(dict(self.rows("SELECT status, count(*) FROM jobs GROUP BY status")))

    def open_jobs(self) -> int:
        return int(
            self.scalar("SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')")
        )

    def all_final(self, total: int) -> bool:
        counts = self.job_statuses()
        return sum(counts[s] for s in FINAL) == total and sum(counts.values()) == total

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a rejected request must leave as it was."""
        return (
            tuple(self.rows("SELECT id, status, error, report, finished_at FROM jobs ORDER BY id")),
            tuple(
                self.rows(
                    "SELECT id, status, tracking_number, error FROM items ORDER BY job_id, id"
                )
            ),
            self.scalar("SELECT count(*) FROM events"),
            self.scalar("SELECT count(*) FROM idempotency_keys"),
        )

    def close(self) -> None:
        self.engine.dispose()


def attempts(log_dir: Path) -> Counter[str]:
    """Dispatch attempts per job, as counted by tests.faults.hooks in every worker."""
    path = log_dir / "attempts.log"
    if not path.exists():
        return Counter()
    return Counter(line for line in path.read_text().splitlines() if line)


def held(log_dir: Path, job_id: str) -> str | None:
    """Where the hook holds the job's dispatch ('before' or 'after' the send), if it does."""
    path = log_dir / f"held-{job_id}"
    return path.read_text() if path.exists() else None


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 2)


def signed_headers(
    job_id: str,
    body: bytes | str,
    webhook_id: str | None = None,
    *,
    secret: str | None = None,
    timestamp: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, signed with the job's secret (or ``secret``)."""
    raw = body.encode() if isinstance(body, str) else body
    msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    key = base64.b64decode(
        (secret or job_callback_secret(MASTER_SECRET, job_id)).removeprefix("whsec_")
    )
    # HMAC over the raw bytes, as the spec says (a body need not be valid UTF-8 to be signed).
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + raw, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


def post_event(
    base: str, job_id: str, body: bytes | str, headers: dict[str, str]
) -> requests.Response:
    """POST a callback on a fresh connection (thread-safe, unlike a shared Session)."""
    data = body.encode() if isinstance(body, str) else body
    return requests.post(
        f"{base}/api/robot/jobs/{quote(job_id, safe='')}/events",
        data=data,
        headers=headers,
        timeout=30,
    )


def event_body(event_type: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": event_type, "data": data})


class SentinelGroup:
    """A private Redis master, one replica and three Sentinels watching them, on free ports.

    ``url`` is Celery's ``sentinel://…;…`` form for ``REDIS_URL`` with ``REDIS_SENTINEL_MASTER``
    = ``master_name``. ``failover()`` asks a Sentinel to promote the replica; ``kill_master()``
    SIGKILLs the master and leaves the Sentinels to notice. Both return once a new master is
    named, with the moment it was (``time.monotonic()``).
    """

    master_name = "orchestrator"

    def __init__(self, log_dir: Path, db: int = 0) -> None:
        self.log_dir = log_dir
        self.db = db
        self.ports = {"a": free_port(), "b": free_port()}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.servers: dict[str, Process] = {}
        self.sentinels: list[Process] = []

    @property
    def url(self) -> str:
        entries = [f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports]
        entries[0] += f"/{self.db}"
        return ";".join(entries)

    def _server(self, name: str, replica_of: int | None = None) -> None:
        # Its own folder: a full resync writes an RDB file there (never the repository's root).
        folder = self.log_dir / f"redis-{name}"
        folder.mkdir(exist_ok=True)
        command = (
            f"redis-server --port {self.ports[name]} --bind 127.0.0.1 --save '' "
            f"--appendonly no --dir {folder}"
        )
        if replica_of is not None:
            command += f" --replicaof 127.0.0.1 {replica_of}"
        self.servers[name] = Process(f"redis-{name}", command, {"PATH": bin_path()}, self.log_dir)
        wait_until(lambda: redis_answers(f"redis://127.0.0.1:{self.ports[name]}"), 15, name)

    def start(self) -> SentinelGroup:
        self._server("a")
        self._server("b", replica_of=self.ports["a"])
        replica = redis.Redis(port=self.ports["b"])
        wait_until(
            lambda: replica.info("replication").get("master_link_status") == "up", 15, "replica"
        )
        replica.close()
        for n, port in enumerate(self.sentinel_ports):
            conf = self.log_dir / f"sentinel-{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.ports['a']} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 10000\n"
            )
            self.sentinels.append(
                Process(
                    f"sentinel-{n}",
                    f"redis-server {conf} --sentinel",
                    {"PATH": bin_path()},
                    self.log_dir,
                )
            )
        wait_until(
            lambda: all(self._knows_replica(p) for p in self.sentinel_ports), 30, "sentinels"
        )
        return self

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def _knows_replica(self, port: int) -> bool:
        try:
            client = self._sentinel(port)
            replicas = client.sentinel_slaves(self.master_name)
            others = client.sentinel_sentinels(self.master_name)
            client.close()
            return len(replicas) == 1 and len(others) == 2
        except redis.RedisError:
            return False

    def master_port(self) -> int | None:
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                client = self._sentinel(port)
                address = client.sentinel_get_master_addr_by_name(self.master_name)
                client.close()
                if address:
                    return int(address[1])
        return None

    def _promoted(self, old: int) -> float:
        def new_master() -> bool:
            port = self.master_port()
            if port is None or port == old:
                return False
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                return client.info("replication")["role"] == "master"
            except redis.RedisError:
                return False
            finally:
                client.close()

        wait_until(new_master, 60, "a new master", interval=0.05)
        return time.monotonic()

    def failover(self) -> float:
        old = self.master_port()
        assert old is not None
        self._sentinel(self.sentinel_ports[0]).execute_command(
            "SENTINEL", "FAILOVER", self.master_name
        )
        return self._promoted(old)

    def kill_master(self) -> float:
        old = self.master_port()
        name = next(n for n, p in self.ports.items() if p == old)
        self.servers[name].kill()
        return self._promoted(old)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers.values()]:
            process.stop()


class HostNetwork:
    """Hosts as network namespaces on one bridge, in a private /24 made for this test only.

    The bridge's own address (``gateway``, in the test's namespace) is where the shared
    services are reached (a private Redis, a proxy to PostgreSQL, the simulator); each host
    gets a namespace, a veth pair into the bridge and one address. ``cut(host)`` takes its
    link down, as a pulled cable would: connections hang, nothing is refused. ``down()``
    removes every namespace, link and the bridge, whatever state the test left.
    """

    def __init__(self, hosts: Iterable[str]) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.bridge = f"ob{self.tag}"
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        third = next(n for n in range(1, 255) if f" 10.213.{n}." not in used)
        self.prefix = f"10.213.{third}"
        self.gateway = f"{self.prefix}.1"
        self.hosts = list(hosts)
        self.namespaces = {h: f"orch-{self.tag}-{h}" for h in self.hosts}
        self.addresses = {h: f"{self.prefix}.{10 + n}" for n, h in enumerate(self.hosts)}
        self._veth = {h: (f"vh{self.tag}{n}", f"vn{self.tag}{n}") for n, h in enumerate(self.hosts)}

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)

    def up(self) -> HostNetwork:
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for host in self.hosts:
            ns, (outside, inside) = self.namespaces[host], self._veth[host]
            self._ip("netns", "add", ns)
            self._ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._ip("link", "set", inside, "netns", ns)
            self._ip("link", "set", outside, "master", self.bridge)
            self._ip("link", "set", outside, "up")
            self._ip("-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", inside)
            self._ip("-n", ns, "link", "set", inside, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
        return self

    def run_in(self, host: str, command: str) -> str:
        """The command, run inside the host's namespace."""
        return f"ip netns exec {self.namespaces[host]} {command}"

    def cut(self, host: str) -> None:
        self._ip("link", "set", self._veth[host][0], "down")

    def restore(self, host: str) -> None:
        self._ip("link", "set", self._veth[host][0], "up")

    def down(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", self.namespaces[host]], capture_output=True)
            subprocess.run(["ip", "link", "del", self._veth[host][0]], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
