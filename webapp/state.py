"""What the web app holds for its lifetime: settings, Celery app, database and Redis."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from celery import Celery
from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from orchestrator import audit, dispatch_control, lifecycle, tasks
from orchestrator.config import Settings
from orchestrator.db import connect, session_factory
from orchestrator.rendezvous import Rendezvous, get_redis

log = logging.getLogger(__name__)


@dataclass
class Orchestrator:
    settings: Settings
    celery: Celery

    def session(self) -> Session:
        """Open a database session (use it as a context manager)."""
        return session_factory(self.settings.database_url)()

    def read_connection(self) -> Connection:
        """A pooled connection for reads (use it as a context manager)."""
        return connect(self.settings.database_url)

    @property
    def rendezvous(self) -> Rendezvous:
        return Rendezvous(get_redis(self.settings.redis_url, self.settings.redis_sentinel_master))

    def cancel_job(self, job_id: str, actor: audit.Actor) -> None:
        """Cancel a job (lifecycle.cancel, audited), commit, stop its poller, hand its slot on.

        Raises lifecycle.JobNotFound or lifecycle.TransitionRefused; nothing is committed then.
        """
        with self.session() as session:
            lifecycle.cancel(session, job_id, actor=actor)
            session.commit()
            moved = lifecycle.robots_moved(session)
        self.forget_waiter(job_id)
        tasks.hand_off(self.celery, self.settings, robots=moved)

    def dispatch_state(self, robot: str | None = None) -> dispatch_control.DispatchState:
        """Return a robot's state, or every robot's combined (CONTRACT §3)."""
        with self.session() as session:
            return dispatch_control.read_state(session, self.settings, robot)

    def robot_states(self) -> list[dispatch_control.RobotState]:
        """Return every configured robot's state, in the order of ROBOTS."""
        with self.session() as session:
            return dispatch_control.robot_states(session, self.settings)

    def pause_dispatch(
        self,
        reason: str,
        until: datetime | None,
        actor: audit.Actor,
        robot: str | None = None,
    ) -> dispatch_control.DispatchState:
        """Pause a robot's dispatching (None: every robot's) for every process; commit.

        The one call of the API and the dashboard, so both are audited alike (by ``actor``).
        """
        with self.session() as session:
            state = lifecycle.pause_dispatch(
                session, self.settings, reason, until, robot=robot, actor=actor
            )
            session.commit()
        return state

    def resume_dispatch(
        self, actor: audit.Actor, robot: str | None = None
    ) -> dispatch_control.DispatchState:
        """Resume a robot's dispatching (None: every robot's; audited, by ``actor``), commit,
        then start the jobs that may go."""
        with self.session() as session:
            lifecycle.resume_dispatch(session, self.settings, robot, actor=actor)
            session.commit()
        robots = None if robot is None else [robot]
        tasks.hand_off(self.celery, self.settings, slot_freed=False, robots=robots)
        with self.session() as session:
            return dispatch_control.read_state(session, self.settings, robot)

    def forget_waiter(self, job_id: str) -> None:
        """Stop a finished job's poller early; its keys expire anyway if Redis is down."""
        try:
            self.rendezvous.forget(job_id)
        except RedisError:
            log.warning("job %s: could not drop its Redis keys", job_id)


def orchestrator() -> Orchestrator:
    """Return the current app's orchestrator state."""
    return current_app.extensions["orchestrator"]
