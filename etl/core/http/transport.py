"""An httpx transport on the standard library's http.client: HTTP/1.1 with kept-alive connections.

httpx's default transport (httpcore) spends about 0.45 ms of CPU a request in Python, and its
pool holds one lock over each request's assignment and release: with eight fetch threads and
no latency, a scan's threads spent much of their turns handing that lock and the GIL to each
other. http.client does the same HTTP/1.1 exchange in about 0.2 ms, and this pool's lock is held
only to take or return an idle connection. The httpx.Client above it (URLs, params, auth,
headers, content decoding, timeouts, the exception types the retry table knows) is unchanged.

What it does not do: HTTP/2, proxies and Unix sockets. With a proxy named in the environment,
etl.core.http.session.new_http_client keeps httpx's own transport (httpx reads HTTP(S)_PROXY only
when it builds its transports itself).
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
from typing import Any

import httpx

_Key = tuple[str, str, int]


def _expired(conn: http.client.HTTPConnection) -> bool:
    """A kept-alive connection the server has closed (or sent something unasked on) reads as
    ready: sending on it would fail, and for a POST leave it unknown whether it arrived. The
    same check as httpcore's before it reuses a connection."""
    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 through http.client; at most `keepalive` idle connections are kept per origin."""

    def __init__(self, keepalive: int = 10, verify: ssl.SSLContext | bool = True) -> None:
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._keepalive = keepalive
        # the same certificate store and SSL_CERT_FILE / SSL_CERT_DIR handling as httpx's own transport
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        self._closed = False

    def _checkout(self, key: _Key, timeout: float | None) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if not _expired(conn):
                return conn
            conn.close()
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _checkin(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < self._keepalive:
                idle.append(conn)
                return
        conn.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the request's scheme {scheme!r} is not http or https", request=request)
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = request.read()
        conn = self._checkout(key, timeouts.get("connect"))
        keep = False
        try:
            answer, content = _exchange(conn, request, body, timeouts)
            keep = not answer.will_close
        finally:
            if keep:
                self._checkin(key, conn)
            else:
                conn.close()
        return httpx.Response(answer.status, headers=answer.getheaders(), stream=httpx.ByteStream(content),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason.encode()})

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _exchange(conn: http.client.HTTPConnection, request: httpx.Request, body: bytes,
              timeouts: dict[str, float | None]) -> tuple[http.client.HTTPResponse, bytes]:
    """Send the request and read the whole answer, with http.client's failures as httpx's."""
    stage = "connect" if conn.sock is None else "write"
    try:
        if conn.sock is None:
            conn.connect()
            stage = "write"
        conn.sock.settimeout(timeouts.get("write"))
        conn.putrequest(request.method, request.url.raw_path.decode("ascii"), skip_host=True,
                        skip_accept_encoding=True)
        for name, value in request.headers.raw:
            if name.lower() != b"transfer-encoding":  # the body was read whole: it goes with its length
                conn.putheader(name, value)
        if body and "content-length" not in request.headers:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        stage = "read"
        conn.sock.settimeout(timeouts.get("read"))
        answer = conn.getresponse()
        return answer, answer.read()
    except TimeoutError as exc:
        raise _TIMEOUTS[stage](f"timed out ({stage})", request=request) from exc
    except http.client.HTTPException as exc:  # before OSError: RemoteDisconnected is both
        raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc
    except ssl.SSLError as exc:
        raise httpx.ConnectError(f"TLS: {exc}", request=request) from exc
    except OSError as exc:
        raise _NETWORK[stage](f"{type(exc).__name__}: {exc}", request=request) from exc


_TIMEOUTS: dict[str, Any] = {"connect": httpx.ConnectTimeout, "write": httpx.WriteTimeout, "read": httpx.ReadTimeout}
_NETWORK: dict[str, Any] = {"connect": httpx.ConnectError, "write": httpx.WriteError, "read": httpx.ReadError}
