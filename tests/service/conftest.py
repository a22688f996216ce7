"""End-to-end tests of `petcam serve`: the real binary, real HTTP, a real database.

Every server runs in its own temp directory with its own DATA_DIR and (on PostgreSQL) its own
database; every test talks from its own loopback source address, so the per-IP rate limits of
one test never leak into another.  Photos are small crops of real photos (skimage's chelsea and
coffee, matplotlib's grace_hopper) encoded at test time.

Run:  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/service
      PETCAM_BIN=build/asan/petcam ASAN_OPTIONS=detect_leaks=0 ...   (sanitizer build)
      PETCAM_TEST_DATABASE=postgres ...                                  (PostgreSQL)
"""

import base64
import hashlib
import hmac
import io
import itertools
import json
import os
import sys
import re
import signal
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from petcam_testlib import PHOTOS, listening_ports, photo, setting_names  # noqa: E402
from PIL import Image
from requests.adapters import HTTPAdapter

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PETCAM_BIN = os.path.abspath(
    os.environ.get("PETCAM_BIN", os.path.join(REPO_ROOT, "build", "release", "petcam")))
MODELS_DIR = os.environ.get("PETCAM_MODELS_DIR", os.path.join(REPO_ROOT, "models"))
TEST_DATABASE = os.environ.get("PETCAM_TEST_DATABASE", "sqlite")
PG_BIN = "/usr/lib/postgresql/15/bin"

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
JOB_TIMEOUT_S = 120
SECRET = "service-test-secret-" + "0123456789abcdef" * 2

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
# The seed's fields, then Version 2's (SPEC.md "Results").
PHOTO_KEYS = {"id", "original_path", "upscaled_path", "status", "latitude", "longitude", "created_at",
              "outscale", "format", "width", "height", "upscaled_width", "upscaled_height",
              "progress", "error", "started_at", "completed_at"}

# Settings the harness owns: never inherited from the caller's environment.
_CONFIG_VARS = setting_names()

# Tests that do not check rate limits must never trip one by accident.
DEFAULT_ENV = {
    "HOST": "127.0.0.1",
    "MODEL": "x4fast",
    "JOB_WORKERS": "1",
    "LOG_LEVEL": "info",
    "SECRET_KEY": SECRET,
    "RATE_LIMIT_REGISTER": "1000/minute",
    "RATE_LIMIT_TOKEN": "1000/minute",
    "RATE_LIMIT_UPSCALE": "1000/minute",
    "RATE_LIMIT_BESTCUT": "1000/minute",
    "RATE_LIMIT_ACCOUNT": "1000/minute",
}


# ---------------------------------------------------------------- server logs on failure

_live_servers = []  # servers started and not yet torn down, in start order


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._petcam_log_offsets = {id(s): s.log_size() for s in _live_servers}
    item._petcam_servers = list(_live_servers)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        # Servers started by the test itself are in the list by now; keep them for teardown.
        for s in _live_servers:
            if s not in item._petcam_servers:
                item._petcam_servers.append(s)
    if report.failed:
        offsets = getattr(item, "_petcam_log_offsets", {})
        for s in getattr(item, "_petcam_servers", []) + [s for s in _live_servers]:
            name = f"server log {s.name} ({report.when})"
            if any(n == name for n, _ in report.sections):
                continue
            report.sections.append((name, s.log_text(offsets.get(id(s), 0))[-40000:]))


# ---------------------------------------------------------------- network helpers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRUSTED_PROXY_IP = "127.0.0.50"
_ip_counter = itertools.count(1)


def next_ip():
    """A loopback address no other client of this session uses (127.0.1.1, 127.0.1.2, ...)."""
    n = next(_ip_counter)
    return f"127.0.{1 + n // 250}.{1 + n % 250}"




class SourceAddressAdapter(HTTPAdapter):
    def __init__(self, ip, **kwargs):
        self._ip = ip
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self._ip, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(ip):
    s = requests.Session()
    s.trust_env = False  # never go through an HTTP proxy from the environment
    adapter = SourceAddressAdapter(ip)
    s.mount("http://", adapter)
    return s


# ---------------------------------------------------------------- the server process

class Server:
    _names = itertools.count(1)

    def __init__(self, workdir, env_overrides, database_url):
        self.name = f"s{next(Server._names)}"
        self.workdir = str(workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        self.log_path = os.path.join(self.workdir, "server.log")
        self.database_url = database_url
        self.overrides = dict(env_overrides)
        self.proc = None
        self.port = None
        self.starts = 0

    # -- paths
    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def path(self, relative):
        return os.path.join(self.data_dir, relative)

    def storage_files(self):
        """Every file under DATA_DIR/storage, as paths relative to DATA_DIR."""
        root = self.path("storage")
        out = []
        for dirpath, _, names in os.walk(root):
            for n in names:
                out.append(os.path.relpath(os.path.join(dirpath, n), self.data_dir))
        return sorted(out)

    # -- logs
    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_text(self, offset=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- process control
    def env(self):
        env = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
        env.update(DEFAULT_ENV)
        env["PETCAM_MODELS_DIR"] = MODELS_DIR
        env["DATA_DIR"] = self.data_dir
        env["PORT"] = str(self.port)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        for k, v in self.overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.port = free_port()
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: start #{self.starts} on port {self.port} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [PETCAM_BIN, "serve"], cwd=self.workdir, env=self.env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if self not in _live_servers:
            _live_servers.append(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = session_from("127.0.0.1")
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(
                    f"server exited with {rc} before it was ready; log:\n{self.log_text()[-8000:]}")
            try:
                # The port must be ours: another suite running beside this one may have taken it.
                if self.port in listening_ports(self.proc.pid):
                    r = probe.get(self.url + "/health", timeout=2)
                    if r.status_code == 200:
                        return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"GET /health not 200 within {START_TIMEOUT_S} s; log:\n{self.log_text()[-8000:]}")
            time.sleep(0.1)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM; returns (exit code, seconds it took). Kills -9 and fails on a timeout."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not exit within {timeout} s of SIGTERM")
        return rc, time.monotonic() - t0

    def kill(self):
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def restart(self):
        return self.start()


# ---------------------------------------------------------------- databases

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory):
    """Returns a function giving a fresh DATABASE_URL per server (None: the SQLite default)."""
    if TEST_DATABASE == "sqlite":
        yield lambda: None
        return
    assert TEST_DATABASE == "postgres", f"PETCAM_TEST_DATABASE={TEST_DATABASE!r}: sqlite or postgres"
    pgdir = str(tmp_path_factory.mktemp("postgres"))
    script = os.path.join(REPO_ROOT, "scripts", "test-postgres.sh")
    out = subprocess.run([script, "start", pgdir], check=True, capture_output=True, text=True,
                         timeout=120)
    base = out.stdout.strip().splitlines()[-1].strip()
    m = re.match(r"^postgresql://([^@/]+)@([^:/]+):(\d+)/(\w+)$", base)
    assert m, f"unexpected URL from test-postgres.sh: {base!r}"
    user, host, port, _ = m.groups()

    def new_database():
        name = f"t_{next(_db_counter)}"
        subprocess.run([os.path.join(PG_BIN, "createdb"), "-h", host, "-p", port, "-U", user, name],
                       check=True, capture_output=True, timeout=60)
        return f"postgresql://{user}@{host}:{port}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run([script, "stop", pgdir], timeout=120)


# ---------------------------------------------------------------- server fixtures

class _Servers:
    def __init__(self, tmp_path_factory, database_factory):
        self._tmp = tmp_path_factory
        self._db = database_factory
        self.started = []

    def __call__(self, **overrides):
        """Starts a fresh server (own temp dir, own database) with these env overrides.
        An override of None removes the variable."""
        s = Server(self._tmp.mktemp("server"), overrides, self._db())
        self.started.append(s)
        return s.start()

    def teardown(self):
        problems = []
        for s in self.started:
            if s.running():
                try:
                    rc, _ = s.terminate()
                except AssertionError as e:
                    problems.append(f"{s.name}: {e}")
                else:
                    if rc != 0:
                        problems.append(f"{s.name}: exit code {rc} after SIGTERM")
            if s in _live_servers:
                _live_servers.remove(s)
        if problems:
            pytest.fail("; ".join(problems) + "\n" + "\n".join(
                f"--- {s.name} log tail ---\n{s.log_text()[-6000:]}" for s in self.started))


@pytest.fixture
def start_server(tmp_path_factory, database_factory):
    """Factory: start_server(**env) -> Server; every server is stopped with SIGTERM (exit 0) after the test."""
    servers = _Servers(tmp_path_factory, database_factory)
    yield servers
    servers.teardown()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory, database_factory):
    """Factory for servers shared by the tests of one module."""
    servers = _Servers(tmp_path_factory, database_factory)
    yield servers
    servers.teardown()


# ---------------------------------------------------------------- clients

class Client:
    def __init__(self, server, ip=None):
        self.server = server
        self.ip = ip or next_ip()
        self.session = session_from(self.ip)
        self.token = None
        self.user_id = None
        self.username = None
        self.password = None

    def request(self, method, path, *, auth=True, headers=None, **kw):
        headers = dict(headers or {})
        if auth and self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        kw.setdefault("timeout", 60)
        try:
            return self.session.request(method, self.server.url + path, headers=headers, **kw)
        except requests.ConnectionError:
            if self.server.proc is not None and self.server.proc.poll() is not None:
                raise AssertionError(
                    f"{method} {path}: the server process is gone (exit code {self.server.proc.returncode}); "
                    f"log tail:\n{self.server.log_text()[-3000:]}") from None
            raise

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- API shortcuts
    def register(self, username, password, **kw):
        return self.post("/register", json={"username": username, "password": password}, **kw)

    def login(self, username, password, **kw):
        return self.post("/token", data={"username": username, "password": password}, **kw)

    def upload(self, jpeg, lat=None, lng=None, filename="x.jpg", content_type="image/jpeg"):
        data = {}
        if lat is not None:
            data["lat"] = str(lat)
        if lng is not None:
            data["lng"] = str(lng)
        return self.post("/upscale", files={"file": (filename, jpeg, content_type)}, data=data)

    def bestcut(self, jpegs, lat=None, lng=None):
        parts = [("files", (f"shot{i}.jpg", d, "image/jpeg")) for i, d in enumerate(jpegs)]
        if lat is not None:
            parts.append(("lat", (None, str(lat))))
        if lng is not None:
            parts.append(("lng", (None, str(lng))))
        return self.post("/bestcut", files=parts)

    def photos(self, **params):
        r = self.get("/photos", params=params or {"limit": 1000})
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def photo_entry(self, photo_id):
        for p in self.photos():
            if p["id"] == photo_id:
                return p
        return None

    def wait_status(self, photo_id, want=("completed",), timeout=JOB_TIMEOUT_S, interval=0.1):
        """Polls GET /photos until the photo's status is in `want`; returns the entry."""
        if isinstance(want, str):
            want = (want,)
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            entry = self.photo_entry(photo_id)
            assert entry is not None, f"photo {photo_id} vanished from the list"
            if not seen or seen[-1] != entry["status"]:
                seen.append(entry["status"])
            if entry["status"] in want:
                return entry
            assert entry["status"] != "failed", f"job failed (statuses seen: {seen})"
            assert entry["status"] != "completed", \
                f"job completed before it was seen {want} (statuses seen: {seen})"
            assert time.monotonic() < deadline, \
                f"photo {photo_id} not {want} within {timeout} s (statuses seen: {seen})"
            time.sleep(interval)


_user_counter = itertools.count(1)


def new_username(prefix="user"):
    return f"{prefix}{next(_user_counter)}_{uuid.uuid4().hex[:8]}"


def register_and_login(server, client=None, username=None, password="password123"):
    """Registers a fresh user and logs in; sets client.token etc. Returns the access token."""
    client = client or Client(server)
    username = username or new_username()
    r = client.register(username, password)
    assert r.status_code == 200, (r.status_code, r.text)
    client.user_id = r.json()["id"]
    r = client.login(username, password)
    assert r.status_code == 200, (r.status_code, r.text)
    client.token = r.json()["access_token"]
    client.username, client.password = username, password
    return client.token


def logged_in_client(server, ip=None):
    c = Client(server, ip)
    register_and_login(server, c)
    return c


# ---------------------------------------------------------------- response checks

def assert_detail(r, status, detail=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and "detail" in body, body
    if detail is not None:
        assert body["detail"] == detail, body
    return body["detail"]


def assert_422(r, *locs):
    """422 in FastAPI's shape; every loc in `locs` must be among the errors' locs."""
    detail = assert_detail(r, 422)
    assert isinstance(detail, list) and detail, detail
    for e in detail:
        assert isinstance(e, dict), e
        assert isinstance(e.get("loc"), list) and e["loc"], e
        assert isinstance(e.get("msg"), str) and e["msg"], e
        assert isinstance(e.get("type"), str) and e["type"], e
    got = [list(e["loc"]) for e in detail]
    for loc in locs:
        assert list(loc) in got, f"expected loc {loc} among {got}"
    return detail


def digits_only(s):
    return re.sub(r"[^0-9]", "", s)


def mentions_number(text, n):
    """True if `text` contains the number n, written plainly or with thousands separators."""
    for m in re.finditer(r"\d[\d,_' ]*\d|\d", text):
        if digits_only(m.group(0)) == str(n):
            return True
    return False


# ---------------------------------------------------------------- tokens (forged in Python)

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


def forge_jwt(payload, key=SECRET, alg="HS256", header=None):
    header = header or {"alg": alg, "typ": "JWT"}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(payload, separators=(",", ":")).encode()))
    if alg == "none":
        return signing_input + "."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(key.encode(), signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


# ---------------------------------------------------------------- photos



def photo_image(w, h, name="chelsea"):
    """The whole photo scaled to w x h (a real photo, not noise)."""
    return photo(name).resize((w, h), Image.LANCZOS)


def encode_jpeg(image, quality=90, **kw):
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, **kw)
    return buf.getvalue()


def jpeg(w=80, h=60, name="chelsea", quality=90):
    return encode_jpeg(photo_image(w, h, name), quality=quality)


def decode(data):
    return Image.open(io.BytesIO(data))


def jpeg_size(data):
    with decode(data) as im:
        return im.size


def psnr(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def assert_upscaled_of(upscaled_bytes, original_bytes):
    """The upscaled JPEG is exactly 4x the original and looks like it (downscaled back: >= 25 dB)."""
    with decode(original_bytes) as o, decode(upscaled_bytes) as u:
        assert u.format == "JPEG", u.format
        assert u.size == (4 * o.size[0], 4 * o.size[1]), (u.size, o.size)
        back = u.convert("RGB").resize(o.size, Image.BOX)
        quality = psnr(np.asarray(back), np.asarray(o.convert("RGB")))
    assert quality >= 25, f"upscaled image does not look like the original ({quality:.1f} dB)"


def laplacian_variance(data):
    """Best-cut score as OpenCV computes it: BGR2GRAY (fixed point, rounded to 8 bits), Laplacian
    ksize 1 ([[0,1,0],[1,-4,1],[0,1,0]], BORDER_REFLECT_101) in float64, population variance."""
    with decode(data) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    gray = (rgb[..., 0] * 4899 + rgb[..., 1] * 9617 + rgb[..., 2] * 1868 + (1 << 13)) >> 14
    g = np.pad(gray.astype(np.float64), 1, mode="reflect")  # numpy 'reflect' == reflect-101
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def patch_jpeg_dimensions(data, width, height):
    """The same JPEG with its SOF header claiming width x height."""
    b = bytearray(data)
    assert b[:2] == b"\xff\xd8"
    i = 2
    while i < len(b):
        assert b[i] == 0xFF, f"bad marker at {i}"
        marker = b[i + 1]
        length = int.from_bytes(b[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            b[i + 5:i + 7] = height.to_bytes(2, "big")
            b[i + 7:i + 9] = width.to_bytes(2, "big")
            return bytes(b)
        assert marker != 0xDA, "no SOF before SOS"
        i += 2 + length
    raise AssertionError("no SOF marker")


def wait_until(predicate, timeout, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{message} not met within {timeout} s"
        time.sleep(interval)
