"""Announce every committed change of a job on Redis pub/sub (CONTRACT §13).

A transition marks its job in the session (``changed``); once the transaction commits, one
``PUBLISH`` names every job it changed (none after a rollback). Pub/sub is at-most-once and
the announcement is best-effort: a listener re-reads the job from the database on each
announcement and on a timer, so a lost announcement delays an event and never loses the
final state. Nothing is published when the process has no announcer (``init_announcer``).
"""

from __future__ import annotations

import logging

import redis
from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.orm import Session

from .config import Settings
from .db import configure_sessions
from .rendezvous import get_redis

log = logging.getLogger(__name__)

_CHANGED = "orchestrator.live.changed"  # Session.info: jobs changed in this transaction
_ANNOUNCER = "orchestrator.live.announcer"  # Session.info: this process's Announcer


def job_channel(client: redis.Redis) -> str:
    """The channel of job changes of the client's database (as ``report_channel``)."""
    return f"orchestrator:{client.connection_pool.connection_kwargs.get('db', 0)}:jobs"


def parse_announcement(data: bytes | str) -> list[str]:
    """Return the job ids one announcement names."""
    text = data.decode() if isinstance(data, bytes) else data
    return text.split()


class Announcer:
    """Publishes the ids of the jobs a commit changed, one message per commit."""

    def __init__(self, redis_url: str, sentinel_master: str | None) -> None:
        self.redis_url = redis_url
        self.sentinel_master = sentinel_master

    def publish(self, job_ids: set[str]) -> None:
        """Publish the ids; a Redis failure is logged, never raised (the commit stands)."""
        try:
            client = get_redis(self.redis_url, self.sentinel_master)
            client.publish(job_channel(client), " ".join(sorted(job_ids)))
        except (RedisError, OSError) as exc:
            log.warning(
                "could not announce a change of %d job(s) (%s); live streams see it on "
                "their next re-read",
                len(job_ids),
                type(exc).__name__,
            )


def init_announcer(settings: Settings) -> None:
    """Announce, after each commit of this process's sessions, the jobs it changed."""
    announcer = Announcer(settings.redis_url, settings.redis_sentinel_master)
    configure_sessions(settings.database_url, **{_ANNOUNCER: announcer})


def changed(session: Session, job_id: str) -> None:
    """Note that the session's transaction changes what the job API shows of the job."""
    session.info.setdefault(_CHANGED, set()).add(job_id)


@event.listens_for(Session, "after_commit")
def _announce_after_commit(session: Session) -> None:
    job_ids = session.info.pop(_CHANGED, None)
    announcer: Announcer | None = session.info.get(_ANNOUNCER)
    if job_ids and announcer is not None:
        announcer.publish(job_ids)


@event.listens_for(Session, "after_rollback")
def _nothing_after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)
