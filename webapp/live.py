"""Live job streams (CONTRACT §13): server-sent events fed by one subscription per process.

Each web process holds at most one Redis subscription (the ``Hub``, started by the first
stream and ended a little after the last one closes), whatever the number of open streams.
An announcement (``orchestrator.live``) wakes the streams of the jobs it names through their
bounded queues; a stream then re-reads its job from the database and sends it only when it
differs from what it sent last. A stream also re-reads on a timer, and every stream re-reads
once whenever the subscription is (re)made: announcements are at-most-once, the database is
the truth. A stream whose queue is full (a client that does not read, its socket buffer full)
is closed; so is every stream when the process is told to stop (``Hub.end_all``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, current_app, request
from redis.exceptions import RedisError

from orchestrator import queries
from orchestrator.live import job_channel, parse_announcement
from orchestrator.models import OPEN_JOB_STATUSES
from orchestrator.rendezvous import get_redis

from .state import Orchestrator

log = logging.getLogger(__name__)

# Wake-ups a stream may have pending. Each makes it read the job once (pending ones are taken
# together), so only a stream that cannot write (its client does not read) fills it.
QUEUE_SIZE = 64
# A write that waits this long for the client (its socket buffer full) ends the stream.
WRITE_TIMEOUT_SECONDS = 30.0
# The browser's EventSource waits this long before it reconnects a dropped stream.
RETRY_MS = 2000
_EXTENSION = "orchestrator.live"

_WAKE, _REREAD, _END = "wake", "reread", "end"
# The key of streams woken by every announcement (the dashboard's job list).
ANY_JOB = "*"


class Stream:
    """One open stream's queue of wake-ups, and the socket to cut when it falls behind."""

    def __init__(self, job_id: str, sock: socket.socket | None) -> None:
        self.job_id = job_id
        self.queue: queue.Queue[str] = queue.Queue(QUEUE_SIZE)
        self.socket = sock
        self.ended: str | None = None  # why it must end: "behind" or "stopping"

    def wake(self, why: str) -> None:
        """Queue a wake-up; a stream whose queue is full is behind and is cut off."""
        try:
            self.queue.put_nowait(why)
        except queue.Full:
            self.end("behind")

    def end(self, reason: str) -> None:
        """Make the stream end at once: flagged and woken, or its blocked write cut short."""
        if self.ended is not None:
            return
        self.ended = reason
        try:
            self.queue.put_nowait(_END)
        except queue.Full:
            # Its writer is blocked on a client that does not read: cut the connection.
            if self.socket is not None:
                with contextlib.suppress(OSError):  # already gone
                    self.socket.shutdown(socket.SHUT_RDWR)


class Hub:
    """This process's one subscription to job announcements, fanned out to its streams."""

    def __init__(self, redis_url: str, sentinel_master: str | None) -> None:
        self.redis_url = redis_url
        self.sentinel_master = sentinel_master
        self.linger_seconds = 5.0  # the subscription outlives the last stream this long
        self.retry_seconds = 0.5  # wait before subscribing again after a Redis failure
        self._streams: dict[str, set[Stream]] = {}
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stopping = False
        self.subscribed = threading.Event()  # set while the subscription is confirmed

    def open(self, job_id: str, sock: socket.socket | None = None) -> Stream:
        """Register a stream of the job (before its first read: no announcement is missed)."""
        stream = Stream(job_id, sock)
        with self._lock:
            if self._stopping:
                stream.end("stopping")
            self._streams.setdefault(job_id, set()).add(stream)
            if self._listener is None and not self._stopping:
                self._listener = threading.Thread(target=self._listen, name="live-hub", daemon=True)
                self._listener.start()
        return stream

    def close(self, stream: Stream) -> None:
        """Forget a stream that ended."""
        with self._lock:
            streams = self._streams.get(stream.job_id)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._streams[stream.job_id]

    def count(self) -> int:
        """Return the number of open streams."""
        with self._lock:
            return sum(len(streams) for streams in self._streams.values())

    def end_all(self) -> None:
        """End every open stream and the subscription (the process is stopping)."""
        with self._lock:
            self._stopping = True
            streams = [s for group in self._streams.values() for s in group]
        for stream in streams:
            stream.end("stopping")

    def _wake(self, job_ids: list[str] | None, why: str) -> None:
        with self._lock:
            if job_ids is None:
                streams = [s for group in self._streams.values() for s in group]
            else:
                streams = [s for key in (*job_ids, ANY_JOB) for s in self._streams.get(key, ())]
        for stream in streams:
            stream.wake(why)

    def _retire(self, idle_since: float | None) -> tuple[bool, float | None]:
        """Tell whether the listener may end (no stream for a while, or stopping)."""
        with self._lock:
            if self._stopping:
                self._listener = None
                return True, idle_since
            if self._streams:
                return False, None
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= self.linger_seconds:
                self._listener = None  # the next stream starts a new one
                return True, idle_since
            return False, idle_since

    def _listen(self) -> None:
        """Hold the subscription; after any failure subscribe again, and every stream reads."""
        idle_since: float | None = None
        while True:
            pubsub = None
            try:
                client = get_redis(self.redis_url, self.sentinel_master)
                pubsub = client.pubsub()
                pubsub.subscribe(job_channel(client))
                while True:
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message["type"] == "message":
                        self._wake(parse_announcement(message["data"]), _WAKE)
                    elif message is not None and message["type"] == "subscribe":
                        # Announcements made before this moment may be lost: all read once.
                        self.subscribed.set()
                        self._wake(None, _REREAD)
                    done, idle_since = self._retire(idle_since)
                    if done:
                        return
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning(
                    "live streams: Redis subscription lost (%s); subscribing again",
                    type(exc).__name__,
                )
                done, idle_since = self._retire(idle_since)
                if done:
                    return
                time.sleep(self.retry_seconds)
            finally:
                self.subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        pubsub.close()


_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


def end_all_streams() -> None:
    """End every open stream of this process (on SIGTERM: the server need not wait for them)."""
    for hub in list(_hubs):
        hub.end_all()


def init_app(app: Flask, state: Orchestrator) -> None:
    """Give the app its hub (nothing is started until the first stream)."""
    hub = Hub(state.settings.redis_url, state.settings.redis_sentinel_master)
    _hubs.add(hub)
    app.extensions[_EXTENSION] = hub


def hub_of(app: Flask) -> Hub:
    """Return the app's hub."""
    return app.extensions[_EXTENSION]


def fingerprint(data: str) -> str:
    """The event id of a job state: equal states, equal ids (across reconnects)."""
    return hashlib.blake2b(data.encode(), digest_size=8).hexdigest()


def event_text(job: Any, name: str = "job") -> tuple[str, str]:
    """Return the event (``job`` for a job view), and its id."""
    data = json.dumps(job, separators=(",", ":"))
    event_id = fingerprint(data)
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n", event_id


def is_final(job: dict[str, Any]) -> bool:
    return job["status"] not in OPEN_JOB_STATUSES


def job_events(
    hub: Hub,
    stream: Stream,
    read: Callable[[], Any],
    first: Any,
    keepalive_seconds: float,
    reread_seconds: float,
    name: str = "job",
    final: Callable[[Any], bool] = is_final,
) -> Iterator[str]:
    """Yield the stream's text: the state now, then each different state until a final one."""
    try:
        text, _ = event_text(first, name)
        yield f"retry: {RETRY_MS}\n{text}"
        if final(first):
            return
        last = first
        now = time.monotonic()
        # Streams opened together (after a restart) spread their timer re-reads apart.
        next_reread = now + reread_seconds * random.uniform(0.5, 1.0)
        next_comment = now + keepalive_seconds
        while stream.ended is None:
            wait = max(0.0, min(next_reread, next_comment) - time.monotonic())
            try:
                why: str | None = stream.queue.get(timeout=wait)
            except queue.Empty:
                why = None
            if stream.ended is not None or why == _END:
                return
            now = time.monotonic()
            if why is not None or now >= next_reread:
                while True:  # wake-ups that queued meanwhile are served by this one read
                    try:
                        stream.queue.get_nowait()
                    except queue.Empty:
                        break
                job = read()
                next_reread = time.monotonic() + reread_seconds
                if job is None:  # deleted (retention): nothing more will come
                    return
                if job != last:
                    last = job
                    text, _ = event_text(job, name)
                    next_comment = time.monotonic() + keepalive_seconds
                    yield text
                    if final(job):
                        return
            if time.monotonic() >= next_comment:
                next_comment = time.monotonic() + keepalive_seconds
                yield ": keep-alive\n\n"
    finally:
        hub.close(stream)
        if stream.ended == "behind":
            log.info("live stream of job %s closed: its client fell behind", stream.job_id)


def stream_response(
    app: Flask,
    state: Orchestrator,
    job_id: str,
    environ: dict[str, Any],
    last_event_id: str | None,
    read: Callable[[], Any],
    name: str = "job",
    final: Callable[[Any], bool] = is_final,
) -> Response | None:
    """Answer the stream of a job; None when there is no such job (the caller answers 404).

    The stream registers with the hub before its first read, so a change committed after
    that read is announced to it. A client that reconnects with the id of the final state it
    already has gets 204, which tells an EventSource to stop reconnecting.
    """
    hub = hub_of(app)
    sock = environ.get("gunicorn.socket")
    stream = hub.open(job_id, sock)
    try:
        first = read()
    except BaseException:
        hub.close(stream)
        raise
    if first is None:
        hub.close(stream)
        return None
    if final(first) and last_event_id == event_text(first, name)[1]:
        hub.close(stream)
        return Response(status=204)
    if sock is not None:
        with contextlib.suppress(OSError):
            # A write to a client that stopped reading gives up after this long.
            sock.settimeout(WRITE_TIMEOUT_SECONDS)
    settings = state.settings
    body = job_events(
        hub,
        stream,
        read,
        first,
        settings.live_keepalive_seconds,
        settings.live_reread_seconds,
        name,
        final,
    )
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def never_final(_state: Any) -> bool:
    return False


def job_stream(state: Orchestrator, job_id: str) -> Response | None:
    """Answer this request with the job's stream (§13); None when there is no such job."""
    return stream_response(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        state,
        job_id,
        request.environ,
        request.headers.get("Last-Event-ID"),
        reader(state, job_id),
    )


def reader(state: Orchestrator, job_id: str) -> Callable[[], dict[str, Any] | None]:
    """Return a function that reads the job as ``GET /api/jobs/<id>`` shows it."""

    def read() -> dict[str, Any] | None:
        with state.read_connection() as conn:
            return queries.job_view(conn, job_id)

    return read
