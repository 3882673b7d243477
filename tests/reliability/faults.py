"""A fault-injecting HTTP proxy on 127.0.0.1 in front of moto's S3 server."""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.reliability.listing import page_of, whole_listing_query

# What a fault does to a matching request:
#   status        answer with an S3 error (``status``, ``code``) instead of forwarding
#   reset         drop the connection with a TCP reset before any answer
#   cut           forward, then send the headers and only ``fraction`` of the body, then close
#   cut_unframed  like cut, but without Content-Length: the client sees a clean, short EOF
#   stall         set ``reached``, hold the request until ``release`` is set, then drop it
#   hook          call ``hook`` first, then forward (e.g. replace an object mid-run)
#   ok200error    answer 200 OK with an S3 error body (how S3 fails CompleteMultipartUpload)
#   trickle       forward, then send the headers and one body byte every ``interval`` seconds
#                 (an endpoint that beats every read timeout yet never finishes)
#   drip          forward, then send the whole answer, status line and headers included, one
#                 byte every ``interval`` seconds (for answers without a body too)
#   listing       answer ListObjectsV2 or ListMultipartUploads from the real listing, in pages
#                 of one entry, misbehaving as ``misbehave`` says (see `listing.py`)
# and, for any action that forwards, ``drop`` names request headers removed first (a store
# that ignores ``If-Match``: drop=("If-Match",)).
ACTIONS = ("status", "reset", "cut", "cut_unframed", "stall", "hook", "ok200error", "trickle",
           "drip", "listing")


@dataclass
class Fault:
    """One rule: which requests (method, path regex, query substring) and what to do to them."""

    action: str
    method: str | None = None
    path: str = ""
    query: str = ""
    times: int = 1  # how many matching requests get it; -1 for all of them
    status: int = 503
    code: str = "SlowDown"
    fraction: float = 0.5
    hook: Callable[[], None] | None = None
    interval: float = 20.0
    drop: tuple[str, ...] = ()
    misbehave: str = "none"  # for "listing": one of listing.MISBEHAVIOURS
    hits: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        assert self.action in ACTIONS, self.action

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.times >= 0 and self.hits >= self.times:
            return False
        if self.method is not None and method != self.method:
            return False
        return bool(re.search(self.path, path)) and self.query in query


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and what it did with it."""

    method: str
    path: str
    query: str
    action: str  # "forward" or the fault's action
    range: str | None = None  # the Range header, for reads resumed mid-object


def error_body(code: str, message: str = "injected by the test proxy") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>FAULT</RequestId></Error>").encode()


class FaultProxy:
    """Forwards HTTP/1.1 requests to ``upstream`` and injects the faults added to it."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._began: dict[str, float] = {}  # multipart upload id -> when it was created
        self._lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        # stop() waits for serve_forever to see the request to shut down, which it checks
        # every poll_interval: 0.5 s by default, half a second of every test with a proxy.
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True,
                                        name="fault-proxy")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        for fault in self.faults:
            fault.release.set()
        self._server.shutdown()
        self._server.server_close()

    def add(self, action: str, **options: object) -> Fault:
        fault = Fault(action, **options)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            for fault in self.faults:
                fault.release.set()
            self.faults.clear()
            self.seen.clear()

    def requests(self, action: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if action is None or s.action == action]

    def _true_upload_times(self, method: str, query: str, payload: bytes) -> bytes:
        """moto reports every multipart upload as begun in 2010; S3 gives the real time.

        The proxy notes when each upload began and puts that in ListMultipartUploads
        answers, so code that judges an upload's age sees what it would on S3.
        """
        names = {part.split("=", 1)[0] for part in query.split("&")}
        if "uploads" not in names:
            return payload
        text = payload.decode("utf-8", "replace")
        if method == "POST":
            for upload_id in re.findall(r"<UploadId>([^<]+)</UploadId>", text):
                with self._lock:
                    self._began[upload_id] = time.time()
            return payload
        if method != "GET":
            return payload

        def fix(match: re.Match[str]) -> str:
            began = self._began.get(match.group(1))
            if began is None:
                return match.group(0)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(began))
            return re.sub(r"<Initiated>[^<]*</Initiated>", f"<Initiated>{stamp}</Initiated>",
                          match.group(0))

        with self._lock:
            text = re.sub(r"<UploadId>([^<]+)</UploadId>.*?</Upload>", fix, text, flags=re.S)
        return text.encode("utf-8")

    def _decide(self, method: str, path: str, query: str, range_: str | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, query):
                    fault.hits += 1
                    self.seen.append(Seen(method, path, query, fault.action, range_))
                    return fault
            self.seen.append(Seen(method, path, query, "forward", range_))
            return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away (killed, reset) is what these tests provoke


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # the connection was reset on purpose

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET  # noqa: N815

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        path, _, query = self.path.partition("?")
        fault = self.owner._decide(self.command, path, query, self.headers.get("Range"))
        action = fault.action if fault else "forward"
        if fault is not None and action == "status":
            self._answer(fault.status, error_body(fault.code))
            return
        if fault is not None and action == "ok200error":
            self._answer(200, error_body(fault.code))
            return
        if action == "reset":
            self._reset()
            return
        if fault is not None and action == "stall":
            fault.reached.set()
            fault.release.wait(timeout=120)
            self._reset()
            return
        if fault is not None and action == "hook" and fault.hook is not None:
            fault.hook()
        if fault is not None and action == "listing":
            status, reason, headers, payload = self._forward(
                body, target=f"{path}?{whole_listing_query(query)}")
            payload = self.owner._true_upload_times(self.command, query, payload)
            self._send(status, reason, headers, page_of(payload, query, fault.misbehave))
            return
        status, reason, headers, payload = self._forward(body, fault.drop if fault else ())
        payload = self.owner._true_upload_times(self.command, query, payload)
        if fault is not None and action == "trickle":
            self._send_trickle(status, reason, headers, payload, fault)
            return
        if fault is not None and action == "drip":
            length = len(payload) if self.command != "HEAD" else next(
                (int(v) for k, v in headers if k.lower() == "content-length"), 0)
            answer = self._head_lines(status, reason, headers, length)
            self._drip(answer + (payload if self.command != "HEAD" else b""), fault)
            return
        if fault is not None and action in ("cut", "cut_unframed"):
            self._send_cut(status, reason, headers, payload, fault.fraction,
                           framed=action == "cut")
            return
        self._send(status, reason, headers, payload)

    def _forward(self, body: bytes, drop: tuple[str, ...] = (), target: str | None = None
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        skip = {"transfer-encoding", "expect", "connection", "content-length"}
        skip |= {name.lower() for name in drop}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, target or self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, resp.reason, resp.getheaders(), payload
        finally:
            conn.close()

    def _head_lines(self, status: int, reason: str, headers: list[tuple[str, str]],
                    length: int | None) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason}"]
        for name, value in headers:
            if name.lower() in ("transfer-encoding", "connection", "content-length"):
                continue
            lines.append(f"{name}: {value}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        else:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]],
              payload: bytes) -> None:
        if self.command == "HEAD":
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            self.wfile.write(self._head_lines(status, reason, headers, length))
        else:
            self.wfile.write(self._head_lines(status, reason, headers, len(payload)) + payload)
        self.wfile.flush()

    def _answer(self, status: int, payload: bytes) -> None:
        reason = http.client.responses.get(status, "Error")
        self._send(status, reason, [("Content-Type", "application/xml")], payload)

    def _send_cut(self, status: int, reason: str, headers: list[tuple[str, str]],
                  payload: bytes, fraction: float, *, framed: bool) -> None:
        keep = payload[: int(len(payload) * fraction)]
        head = self._head_lines(status, reason, headers, len(payload) if framed else None)
        self.wfile.write(head + keep)
        self.wfile.flush()
        # A FIN, not a reset, so the client gets every byte sent before it: with a
        # Content-Length it knows the body is short; without one nothing tells it.
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _send_trickle(self, status: int, reason: str, headers: list[tuple[str, str]],
                      payload: bytes, fault: Fault) -> None:
        self.wfile.write(self._head_lines(status, reason, headers, len(payload)))
        self.wfile.flush()
        self._drip(payload, fault)

    def _drip(self, data: bytes, fault: Fault) -> None:
        self.close_connection = True
        for byte in data:
            if fault.release.wait(timeout=fault.interval):
                break  # the test is over
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return  # the client gave up: what the test wants

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
