"""StdlibTransport (etl/core/http/transport.py) against a real socket server that misbehaves on cue:
kept-alive connections, a server closing them, refusals, time-outs, cut bodies, encodings, TLS."""

from __future__ import annotations

import gzip
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from etl.core.http.retry import RETRYABLE_EXCEPTIONS
from etl.core.http.transport import StdlibTransport

Answer = Callable[[bytes, bytes], bytes | None]  # (request head, body) -> raw answer, None = close


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.close_after_answer = False
        self.open_sockets: list[socket.socket] = []
        self.requests: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        sock = self.request
        if server.tls is not None:
            try:
                sock = server.tls.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return
        with server.lock:
            server.connections += 1
            server.open_sockets.append(sock)
        stream = sock.makefile("rb")
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = stream.readline()
                if not line:
                    return
                head += line
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = stream.read(length) if length else b""
            with server.lock:
                server.requests.append((head, body))
            raw = server.answer(head, body)
            if raw is None:
                sock.close()
                return
            sock.sendall(raw)
            if server.close_after_answer:
                sock.close()
                return


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(answer: Answer, tls: ssl.SSLContext | None = None) -> _Server:
        server = _Server(answer, tls)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + head.encode() + \
        b"Content-Length: %d\r\n\r\n" % len(body) + body


def echo(head: bytes, body: bytes) -> bytes:
    target = head.split(b" ")[1]
    return ok(b'{"target": "%s", "body": "%s"}' % (target, body.replace(b'"', b"'")))


def client(server: _Server, **kwargs: object) -> httpx.Client:
    return httpx.Client(base_url=server.url, transport=StdlibTransport(**kwargs), timeout=5)  # type: ignore[arg-type]


def test_requests_go_over_one_kept_alive_connection_with_their_params_headers_and_bodies(serve):
    server = serve(echo)
    with client(server) as c:
        for n in range(5):
            answer = c.get("/api/v2/tickets", params={"page": n, "order_by": "date_updated{asc}"})
            assert answer.status_code == 200
            assert answer.json()["target"] == f"/api/v2/tickets?page={n}&order_by=date_updated%7Basc%7D"
        posted = c.post("/api/v2/tickets", json={"title": "Ünïcode"}, headers={"Authorization": "Basic eA=="})
        assert posted.json()["body"] == "{'title':'Ünïcode'}"
    assert server.connections == 1
    head, body = server.requests[-1]
    assert b"\r\nAuthorization: Basic eA==\r\n" in head
    assert b"content-length: %d" % len(body) in head.lower()
    assert head.lower().count(b"\r\nhost: 127.0.0.1") == 1  # httpx's Host header, not a second one


def test_a_connection_the_server_closed_while_idle_is_replaced_and_a_post_is_sent_once(serve):
    server = serve(lambda h, b: ok(b"{}"))
    with client(server) as c:
        c.get("/first")
        # the server drops the idle connection (as its keep-alive time-out does): the next request
        # must notice before it sends, not send a POST into a closed socket
        for sock in server.open_sockets:
            sock.shutdown(socket.SHUT_RDWR)
        time.sleep(0.2)
        assert c.post("/tickets", json={"n": 1}).status_code == 200
    assert server.connections == 2
    assert [h.split(b" ")[0] for h, _ in server.requests] == [b"GET", b"POST"]


def test_an_answer_that_closes_the_connection_is_not_reused(serve):
    server = serve(lambda h, b: ok(b"{}", "Connection: close"))
    with client(server) as c:
        for _ in range(3):
            assert c.get("/x").status_code == 200
    assert server.connections == 3


def test_failures_become_the_httpx_exceptions_the_retry_table_retries(serve):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with httpx.Client(transport=StdlibTransport(), timeout=2) as c, pytest.raises(httpx.ConnectError):
        c.get(f"http://127.0.0.1:{port}/refused")

    cut = serve(lambda h, b: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"data": [')
    cut.close_after_answer = True
    def silent_answer(head: bytes, body: bytes) -> bytes:
        time.sleep(3)
        return ok(b"{}")

    silent = serve(silent_answer)
    hang_up = serve(lambda h, b: None)
    with httpx.Client(transport=StdlibTransport(), timeout=0.5) as c:
        for server, expected in ((cut, httpx.RemoteProtocolError), (silent, httpx.ReadTimeout),
                                 (hang_up, httpx.RemoteProtocolError)):
            with pytest.raises(expected) as raised:
                c.get(f"{server.url}/page")
            assert isinstance(raised.value, RETRYABLE_EXCEPTIONS)


def test_gzip_and_chunked_answers_are_decoded(serve):
    payload = b'{"data": [' + b",".join(b'{"id": %d}' % n for n in range(500)) + b"]}"
    packed = gzip.compress(payload)
    server = serve(lambda h, b: ok(packed, "Content-Encoding: gzip"))
    chunked_server = serve(lambda h, b: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:700], payload[700:]))
                           + b"0\r\n\r\n")
    with client(server) as c:
        assert c.get("/gz").json()["data"][499] == {"id": 499}
    with client(chunked_server) as c:
        for _ in range(2):  # the connection stays usable after a chunked answer
            assert len(c.get("/chunked").json()["data"]) == 500
    assert chunked_server.connections == 1


def test_many_threads_share_the_transport_without_mixing_answers(serve):
    server = serve(echo)
    errors: list[BaseException] = []
    with client(server, keepalive=4) as c:

        def work(n: int) -> None:
            try:
                for k in range(40):
                    assert c.get("/t", params={"n": n, "k": k}).json()["target"] == f"/t?n={n}&k={k}"
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert len(server.requests) == 320
    assert server.connections <= 8 + 40  # reused, not one per request


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_is_verified_against_the_certificate_store(serve, certificate):
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = serve(echo, tls)
    trusting = ssl.create_default_context(cafile=str(cert))
    with client(server, verify=trusting) as c:
        assert c.get("/secure", params={"a": 1}).json()["target"] == "/secure?a=1"
        assert c.get("/secure").status_code == 200
    assert server.connections == 1
    with client(server) as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        c.get("/secure")


def test_a_proxy_named_in_the_environment_keeps_httpxs_own_transport(monkeypatch):
    from etl.core.http.session import new_http_client

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with new_http_client("https://example.test/api/v2/", 5, 8) as direct:
        assert isinstance(direct._transport, StdlibTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    with new_http_client("https://example.test/api/v2/", 5, 8) as proxied:
        assert isinstance(proxied._transport, httpx.HTTPTransport)
        assert any(transport is not None for transport in proxied._mounts.values())  # the proxy's
