"""The Redis rendezvous between the callback edge and the waiting chain.

The callback writes a job's batch report to a key first, then announces it on a pub/sub
channel: pub/sub is at-most-once, so the key is what a waiter trusts and the message only
wakes it sooner. The database stays the durable record; housekeeping settles from it when
Redis lost its data.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import cast
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel


def report_channel(client: redis.Redis) -> str:
    """The report channel of the client's database.

    PUBLISH ignores the database number: a server-wide channel name would let deployments
    (or test runs) that share a Redis server on different databases wake each other's
    workers. The name carries the database, as every key already does implicitly.
    """
    return f"orchestrator:{client.connection_pool.connection_kwargs.get('db', 0)}:reports"


KEY_TTL_SECONDS = 7 * 24 * 3600

# Hand the poller token on only if the caller still holds it (compare-and-set); answer
# -1 for a stale token, else whether the job's report key exists (one round trip a poll).
_HAND_ON_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return redis.call('EXISTS', KEYS[2])
end
return -1
"""

_clients: dict[tuple[int, str, str | None], redis.Redis] = {}
_clients_lock = threading.Lock()

# The health check PINGs a connection idle that long before using it again: a pub/sub
# listener on a host cut off from Redis notices within seconds, not never.
CLIENT_OPTIONS = {"socket_timeout": 10, "socket_connect_timeout": 5, "health_check_interval": 10}


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """Split Celery's ``sentinel://[:pw@]h:p[/db];sentinel://h:p;…`` into its parts.

    Returns the Sentinels' addresses, the master's password and database (both written
    on the first entry, as Celery and kombu read them).
    """
    entries = [entry.strip() for entry in url.split(";") if entry.strip()]
    if not entries:
        raise ValueError("no Sentinel listed")
    hosts: list[tuple[str, int]] = []
    password: str | None = None
    db = 0
    for n, entry in enumerate(entries):
        parts = urlsplit(entry)
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ValueError("every entry must be sentinel://host:port")
        hosts.append((parts.hostname, parts.port or 26379))
        if n == 0:
            password = unquote(parts.password) if parts.password else None
            path = parts.path.strip("/")
            if path:
                if not path.isdigit():
                    raise ValueError("the database after the first entry must be a number")
                db = int(path)
    return hosts, password, db


def _new_client(url: str, sentinel_master: str | None) -> redis.Redis:
    if not sentinel_master:
        return redis.Redis.from_url(url, **CLIENT_OPTIONS)
    hosts, password, db = parse_sentinel_url(url)
    # As kombu's sentinel transport: the password is the master's; the Sentinels need none.
    sentinel = Sentinel(hosts, sentinel_kwargs=dict(CLIENT_OPTIONS), **CLIENT_OPTIONS)
    return sentinel.master_for(sentinel_master, password=password, db=db, **CLIENT_OPTIONS)


def get_redis(url: str, sentinel_master: str | None = None) -> redis.Redis:
    """Return this process's Redis client for the URL (one, even under concurrent first use).

    With ``sentinel_master`` the URL lists Sentinels (CONTRACT §10) and the client follows
    the master they name, across failovers. Two clients made by racing threads would leave
    one unreferenced mid-command: its finalizer closes its pool's sockets under the command
    ("Bad file descriptor", a 500).
    """
    key = (os.getpid(), url, sentinel_master)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _new_client(url, sentinel_master)
                _clients[key] = client
    return client


def report_key(job_id: str) -> str:
    return f"orchestrator:job:{job_id}:report"


def poller_key(job_id: str) -> str:
    return f"orchestrator:job:{job_id}:poller"


def wake_key(job_id: str) -> str:
    return f"orchestrator:job:{job_id}:woken"


def opening_key(robot: str, opens_at: int) -> str:
    return f"orchestrator:robot:{robot}:opening:{opens_at}"


class Rendezvous:
    """Keys and messages that tell a waiting job its batch was reported."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.channel = report_channel(client)

    def announce_report(self, job_id: str, report: str) -> None:
        """Write the report key, then publish: a waiter that subscribed late still sees it."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(report_key(job_id), report, ex=KEY_TTL_SECONDS)
        pipe.publish(self.channel, job_id)
        pipe.execute()

    def has_report(self, job_id: str) -> bool:
        """Tell whether a batch report for the job is waiting to be finalized."""
        return bool(self.redis.exists(report_key(job_id)))

    def claim_poller(self, job_id: str) -> str | None:
        """Become the job's only poller; None if another poller already holds it."""
        token = uuid.uuid4().hex
        if self.redis.set(poller_key(job_id), token, nx=True, ex=KEY_TTL_SECONDS):
            return token
        return None

    def pass_poller(self, job_id: str, token: str) -> tuple[str | None, bool]:
        """Hand the poller role to the next poll, and tell whether the report is in.

        Returns ``(None, False)`` when this token is stale: another poller owns the job.
        """
        new = uuid.uuid4().hex
        answer = cast(
            int,
            self.redis.eval(
                _HAND_ON_SCRIPT,
                2,
                poller_key(job_id),
                report_key(job_id),
                token,
                new,
                KEY_TTL_SECONDS,
            ),
        )
        if answer < 0:
            return None, False
        return new, answer == 1

    def claim_wake(self, job_id: str) -> bool:
        """Let exactly one listener (of all workers) act on a report announcement."""
        return bool(self.redis.set(wake_key(job_id), "1", nx=True, ex=3600))

    def claim_opening(self, robot: str, opens_at: int, ttl: int) -> bool:
        """Let one process arm the hand-off of a robot's opening at ``opens_at`` (Unix s)."""
        return bool(self.redis.set(opening_key(robot, opens_at), "1", nx=True, ex=max(ttl, 1)))

    def release_opening(self, robot: str, opens_at: int) -> None:
        """Give the opening up again (its hand-off could not be enqueued)."""
        self.redis.delete(opening_key(robot, opens_at))

    def forget(self, job_id: str) -> None:
        """Drop a finished job's keys: any poll still scheduled finds its token stale."""
        self.redis.delete(report_key(job_id), poller_key(job_id))
