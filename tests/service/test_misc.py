"""Health, unknown paths and methods, API documents, the request log."""

import os
import re
import socket
import struct
import subprocess
import time

import pytest

from conftest import PG_BIN, TEST_DATABASE, Client, assert_detail, jpeg, logged_in_client

API_PATHS = {
    "/register": {"post"},
    "/token": {"post"},
    "/upscale": {"post"},
    "/bestcut": {"post"},
    "/photos": {"get"},
    "/photos/{photo_id}": {"get", "delete"},
    "/health": {"get"},
}


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers()


def test_health(server):
    r = Client(server).get("/health")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "ok", "version": "1.0.0"}


def test_unknown_path(server):
    c = logged_in_client(server)
    for path in ("/nope", "/photos/a/b", "/storage/originals/x.jpg", "/../etc/passwd", "/register/x"):
        assert_detail(c.get(path), 404, "Not Found")


def test_wrong_method(server):
    c = logged_in_client(server)
    for method, path in (("PUT", "/photos"), ("POST", "/photos"), ("GET", "/upscale"),
                         ("GET", "/register"), ("POST", "/health"), ("DELETE", "/photos"),
                         ("PATCH", "/photos/00000000-0000-0000-0000-000000000000")):
        r = c.request(method, path)
        assert_detail(r, 405, "Method Not Allowed")


def test_openapi_document(server):
    r = Client(server).get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert str(doc["openapi"]).startswith("3.")
    assert doc["info"]["version"] == "1.0.0"
    for path, methods in API_PATHS.items():
        assert path in doc["paths"], f"{path} missing from openapi.json"
        assert methods <= set(doc["paths"][path]), (path, set(doc["paths"][path]))


def test_docs_pages(server):
    c = Client(server)
    for path in ("/docs", "/redoc"):
        r = c.get(path)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"].startswith("text/html"), (path, r.headers["Content-Type"])
        assert "openapi.json" in r.text, f"{path} does not load the API document"


def test_clients_that_hang_up_mid_download_leave_the_server_serving(server):
    """A phone that drops a download halfway (an app sent to the background, a gallery scrolled past) resets
    the connection while the file is still being written; the server must carry on (it died of SIGPIPE, and
    RESTinio's sendfile freed itself under ASan)."""
    c = logged_in_client(server)
    # A real JPEG padded to 8 MB (decoders ignore what follows its end): more than loopback's socket buffers
    # hold, so the server is still writing when the reset arrives. The padding repeats every 251 bytes, so a
    # range read from the wrong offset does not match.
    body = jpeg(64, 48, "chelsea")
    body += (bytes(range(251)) * (8_000_000 // 251 + 1))[: 8_000_000 - len(body)]
    r = c.upload(body)
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    request = (f"GET /photos/{pid}?type=original HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {c.token}\r\n\r\n").encode()
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    for _ in range(10):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((c.ip, 0))
        s.connect((host, int(port)))
        s.sendall(request)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        s.close()
    time.sleep(0.5)
    assert server.running(), server.log_text()[-3000:]
    r = c.get(f"/photos/{pid}", params={"type": "original"})
    assert r.status_code == 200 and r.content == body
    # Ranges come from the right place, small ones (read into the answer) and large ones (written from a
    # mapping of the file).
    for rng, want in (("bytes=5000000-5000099", body[5_000_000:5_000_100]), ("bytes=3000001-", body[3_000_001:]),
                      ("bytes=0-99", body[:100])):
        r = c.get(f"/photos/{pid}", params={"type": "original"}, headers={"Range": rng})
        assert r.status_code == 206 and r.content == want, (rng, r.status_code, len(r.content))


def test_request_log(server):
    c = Client(server)
    c.get("/no-such-page-for-the-log")
    c.post("/token", data={"username": "nobody-here", "password": "whatever1"})
    time.sleep(0.3)
    lines = server.log_text().splitlines()
    assert any("GET" in l and "/no-such-page-for-the-log" in l and "404" in l for l in lines), \
        "no log line with method, path and status for GET /no-such-page-for-the-log"
    assert any("POST" in l and "/token" in l and "401" in l for l in lines), \
        "no log line for POST /token -> 401"


@pytest.mark.skipif(TEST_DATABASE != "postgres", reason="needs a database that can go away (PostgreSQL)")
def test_health_503_without_database(start_server):
    server = start_server()
    c = Client(server)
    assert c.get("/health").status_code == 200
    m = re.match(r"^postgresql://([^@/]+)@([^:/]+):(\d+)/(\w+)$", server.database_url)
    user, host, port, name = m.groups()
    subprocess.run([os.path.join(PG_BIN, "dropdb"), "--force", "-h", host, "-p", port, "-U", user, name],
                   check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 15
    while True:
        r = c.get("/health")
        if r.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert_detail(r, 503)
    # Photo routes fail cleanly too (no hang, a JSON error).
    r = c.post("/token", data={"username": "someone", "password": "password123"})
    assert r.status_code >= 500, (r.status_code, r.text)
    assert_detail(r, r.status_code)


def test_metrics(start_server):
    server = start_server()
    c = logged_in_client(server)
    r = c.upload(jpeg(64, 48, "chelsea"))
    assert r.status_code == 200, r.text
    c.wait_status(r.json()["id"])
    Client(server).get("/nope")
    m = Client(server).get("/metrics")
    assert m.status_code == 200
    assert m.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = m.text
    assert 'petcam_http_requests_total{route="POST /upscale",status="200"} 1' in text
    assert 'petcam_http_requests_total{route="other",status="404"} 1' in text
    assert re.search(r'petcam_http_request_duration_seconds_count\{route="POST /token"\} 1\b', text)
    assert 'petcam_jobs{state="completed"} 1' in text
    assert "petcam_queue_depth 0" in text
    assert 'petcam_job_duration_seconds_count{model="x4fast"} 1' in text
    assert "petcam_workers 1" in text
    # Every sample line is `name{labels} value` or `name value`: what Prometheus parses.
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r'[a-z_]+(\{[^}]*\})? [0-9.e+-]+', line), line
