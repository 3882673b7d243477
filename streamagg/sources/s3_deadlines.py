"""Deadlines of S3 calls: each API call, all its attempts included, ends by a wall-clock time."""

from __future__ import annotations

import heapq
import itertools
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import botocore.awsrequest

from ..config import shown
from ..errors import StorageError, UsageError
from .s3_client import CALLS

# Two read timeouts: a healthy store answers a call in well under a second, a throttled one
# within the retries' backoff (15 s of sleep at most); a call still unanswered by then never
# will be.
DEFAULT_DEADLINE = 120.0
DEADLINE_VARIABLE = "STREAMAGG_S3_DEADLINE"
# A whole listing: ten calls' worth. S3 answers a page of 1,000 keys in about 0.1 s, so the
# default's 20 minutes list millions of keys.
LISTING_CALLS = 10


@dataclass(frozen=True)
class Deadline:
    """How long one S3 API call may take, from its first byte sent to its answer's last byte
    received, all attempts and backoff included: ``seconds``, plus, for a call that sends a
    body (an upload or a part), the time its bytes take at ``min_rate`` bytes a second."""

    seconds: float = DEFAULT_DEADLINE
    min_rate: int = 0

    @classmethod
    def from_environment(cls, min_rate: int) -> Deadline:
        """The default, or ``STREAMAGG_S3_DEADLINE`` seconds (exit 2 when invalid)."""
        text = os.environ.get(DEADLINE_VARIABLE, "").strip()
        if not text:
            return cls(DEFAULT_DEADLINE, min_rate)
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < math.inf:
            raise UsageError(f"invalid {DEADLINE_VARIABLE} {shown(text)}: expected seconds > 0, "
                             "e.g. 120")
        return cls(seconds, min_rate)

    def of_listing(self) -> float:
        """The seconds a whole listing may take, its pages one after the other: each page is
        a call of its own, so a store could otherwise answer each just in time, for ever."""
        return self.seconds * LISTING_CALLS

    def of_call(self, sent: int) -> float:
        """The seconds a call that sends ``sent`` bytes may take (without a minimum rate, the
        time of its bytes is not bounded)."""
        if not sent:
            return self.seconds
        return self.seconds + sent / self.min_rate if self.min_rate else math.inf


class DeadlineExceeded(StorageError):
    """An S3 call that did not finish within its deadline (not retried: the time is spent)."""


class Call:
    """One API call under watch: what and where, when it must have ended, the connections it
    sent requests on."""

    def __init__(self, name: str, uri: str, seconds: float) -> None:
        self.name = name
        self.uri = uri
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.expired = False
        self.done = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    def attach(self, connection: Any) -> None:
        with self._lock:
            if self.done:
                return
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _cut(connection)

    def expire(self) -> None:
        """Past the deadline: cut every connection the call is using, which ends a read that
        is blocked or trickling; the next attempt is then refused (`check`)."""
        with self._lock:
            if self.done:
                return
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._connections.clear()

    def error(self) -> DeadlineExceeded:
        seconds = f"{self.seconds:,.0f}" if self.seconds >= 10 else f"{self.seconds:.3g}"
        return DeadlineExceeded(
            f"S3 {self.name} failed: no complete answer within its deadline of {seconds} s "
            f"({DEADLINE_VARIABLE})", uri=self.uri)


def _cut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return  # not connected yet: the connect timeout bounds that
    try:
        # The plain socket's shutdown, also for TLS: it wakes a thread blocked reading it,
        # where SSLSocket.shutdown would first drop the TLS object under that thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Watchdog:
    """One thread for the process that expires calls at their deadlines."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Call]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, call: Call) -> None:
        with self._wake:
            heapq.heappush(self._heap, (call.expires, next(self._order), call))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="s3-deadlines",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0][2] is call:  # sooner than what the thread waits for
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    if wait is not None and wait <= 0:
                        call = heapq.heappop(self._heap)[2]
                        break
                    self._wake.wait(wait)
            call.expire()


_watchdog = _Watchdog()
_current = threading.local()  # the call this thread is making, if any


def _reset_after_fork() -> None:
    global _watchdog, _current  # noqa: PLW0603 - a forked child starts with a fresh watchdog
    _watchdog = _Watchdog()
    _current = threading.local()


os.register_at_fork(after_in_child=_reset_after_fork)


def _sent_bytes(body: Any) -> int:
    if body is None:
        return 0
    try:
        return len(body)
    except TypeError:
        pass
    try:  # a file object: what is left of it
        here = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(here)
        return int(end - here)
    except (AttributeError, OSError, ValueError):
        return 0


class _Hooks:
    """botocore event handlers that open, check and close a `Call` around each API call."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def target(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        where = params.get("Key", params.get("Prefix"))
        uri = f"s3://{params.get('Bucket', '')}" + (f"/{where}" if where is not None else "")
        context["streamagg_call"] = (uri, _sent_bytes(params.get("Body")))

    def begin(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        uri, sent = context.get("streamagg_call", ("s3://", 0))
        earlier = getattr(_current, "call", None)
        if earlier is not None:
            earlier.finish()  # a call that failed before botocore sent anything
        call = Call(CALLS.get(model.name, model.name), uri, self.deadline.of_call(sent))
        _current.call = call
        if call.seconds < math.inf:
            _watchdog.watch(call)

    def check(self, **_: Any) -> None:
        call = getattr(_current, "call", None)
        if call is not None and call.expired:
            raise call.error()  # no further attempt: botocore does not retry this error

    def end(self, **_: Any) -> None:
        call = getattr(_current, "call", None)
        if call is not None:
            call.finish()
            _current.call = None

    def end_failed(self, exception: BaseException, **_: Any) -> None:
        call = getattr(_current, "call", None)
        self.end()
        if call is not None and call.expired and not isinstance(exception, DeadlineExceeded):
            # Raised here, it replaces botocore's error of the last attempt (a connection
            # the watchdog cut), which would not say why.
            raise call.error() from exception


def enforce(client: Any, deadline: Deadline) -> bool:
    """Bound every API call ``client`` makes (smart_open's and s3transfer's included) by
    ``deadline``; True when reads blocked inside an answer can be cut as well."""
    hooks = _Hooks(deadline)
    events = client.meta.events
    events.register("before-parameter-build.s3", hooks.target)
    events.register("before-call.s3", hooks.begin)
    events.register("before-send.s3", hooks.check)
    events.register("after-call.s3", hooks.end)
    events.register("after-call-error.s3", hooks.end_failed)
    return _watch_connections(client)


class _Watched:
    """An HTTP connection that tells the call being made that it carries its request."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        call = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, botocore.awsrequest.AWSHTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, botocore.awsrequest.AWSHTTPSConnection):
    pass


class _WatchedHTTPPool(botocore.awsrequest.AWSHTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(botocore.awsrequest.AWSHTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _watch_connections(client: Any) -> bool:
    """Make the client's connection pools hand out `_Watched` connections.

    botocore has no public hook for its connection class, so this sets the two attributes
    its URLLib3Session keeps the pool classes in (botocore 1.3x to 1.44).
    `test_s3_deadlines.py` checks they are still there; without them a deadline still ends
    a call's retries, but not a single answer that trickles.
    """
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    manager = getattr(session, "_manager", None)
    if manager is None or not hasattr(session, "_pool_classes_by_scheme"):
        return False
    pools = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    session._pool_classes_by_scheme = pools  # type: ignore[union-attr]  # proxies' pools too
    manager.pool_classes_by_scheme = pools
    return True
