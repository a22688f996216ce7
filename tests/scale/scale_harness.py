"""Harness for the scale-out tests: several `petcam serve` processes (API and worker roles) against one
throwaway PostgreSQL and one shared storage directory.

Ideas taken from tests/service/conftest.py (free ports, a port that must be held by *our* process, per-test
directories, photos cropped from real pictures), written again here so that this suite does not depend on
the service suite's internals.
"""

import io
import itertools
import os
import sys
import random
import re
import signal
import socket
import subprocess
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from petcam_testlib import PHOTOS, listening_ports, photo, setting_names  # noqa: E402
from PIL import Image

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PETCAM_BIN = os.path.abspath(
    os.environ.get("PETCAM_BIN", os.path.join(REPO_ROOT, "build", "release", "petcam")))
MODELS_DIR = os.environ.get("PETCAM_MODELS_DIR", os.path.join(REPO_ROOT, "models"))
PG_SCRIPT = os.path.join(REPO_ROOT, "scripts", "test-postgres.sh")
SECRET = "scale-test-secret-" + "0123456789abcdef" * 2

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30

# Settings the harness owns: never inherited from the caller's environment.
_CONFIG_VARS = setting_names()

BASE_ENV = {
    "HOST": "127.0.0.1",
    "MODEL": "x4fast",
    "LOG_LEVEL": "info",
    "SECRET_KEY": SECRET,
    "RATE_LIMIT_REGISTER": "0",
    "RATE_LIMIT_TOKEN": "0",
    "RATE_LIMIT_UPSCALE": "0",
    "RATE_LIMIT_BESTCUT": "0",
}


# ---------------------------------------------------------------- network

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session():
    s = requests.Session()
    s.trust_env = False  # never through an HTTP proxy from the environment
    return s


# ---------------------------------------------------------------- PostgreSQL

class Postgres:
    """A throwaway cluster (scripts/test-postgres.sh); database() makes a fresh database in it."""
    _counter = itertools.count(1)

    def __init__(self, directory):
        self.directory = str(directory)
        out = subprocess.run([PG_SCRIPT, "start", self.directory], check=True, capture_output=True,
                             text=True, timeout=180)
        url = out.stdout.strip().splitlines()[-1].strip()
        m = re.match(r"^postgresql://([^@/]+)@([^:/]+):(\d+)/(\w+)$", url)
        assert m, f"unexpected URL from test-postgres.sh: {url!r}"
        self.user, self.host, self.port, self.default_db = m.groups()
        self.url = url

    def database(self, prefix="scale"):
        name = f"{prefix}_{next(Postgres._counter)}"
        subprocess.run(["createdb", "-h", self.host, "-p", self.port, "-U", self.user, name],
                       check=True, capture_output=True, timeout=60)
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"

    def stop(self):
        subprocess.run([PG_SCRIPT, "stop", self.directory], timeout=120)


def psql(database_url, query):
    """Runs one query; returns the rows as lists of strings (unaligned, '|' separated)."""
    out = subprocess.run(["psql", "-X", "-q", "-At", "-F", "|", "-d", database_url, "-c", query],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}")
    return [line.split("|") for line in out.stdout.splitlines() if line]


def live_worker_ids(database_url):
    """Rows of the `workers` table as (id, host, model, device)."""
    return [tuple(r) for r in psql(database_url, "SELECT id, host, model, device FROM workers ORDER BY id")]


# ---------------------------------------------------------------- processes

LIVE = []  # every Proc started and not yet reaped by its cluster, for the failure report


class Proc:
    """One `petcam serve` process with its own working directory, DATA_DIR and log file."""

    def __init__(self, name, role, workdir, env, role_via="flag"):
        self.name = name
        self.role = role
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.log_path = os.path.join(self.workdir, "server.log")
        self.port = free_port()
        self.role_via = role_via
        self.env = env
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
        env.update(BASE_ENV)
        env["PETCAM_MODELS_DIR"] = MODELS_DIR
        env["DATA_DIR"] = os.path.join(self.workdir, "data")
        env["PORT"] = str(self.port)  # a worker must not bind it: checked by the tests
        env.update({k: str(v) for k, v in self.env.items() if v is not None})
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
        cmd = [PETCAM_BIN, "serve"]
        if self.role_via == "flag":
            cmd += ["--role", self.role]
        else:
            env["ROLE"] = self.role
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: {' '.join(cmd)} (ROLE={env.get('ROLE', '')}, "
                      f"INSTANCE_ID={env.get('INSTANCE_ID', '')}, PORT={self.port}) ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        LIVE.append(self)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_http(self, timeout=START_TIMEOUT_S):
        """Until this process listens on its port and answers GET /health 200."""
        deadline = time.monotonic() + timeout
        probe = session()
        while True:
            rc = self.proc.poll()
            assert rc is None, f"{self.name} exited with {rc} before it was ready; log:\n{self.log_text()[-6000:]}"
            if self.port in listening_ports(self.pid):
                try:
                    if probe.get(self.url + "/health", timeout=2).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            assert time.monotonic() < deadline, \
                f"{self.name}: GET /health not 200 within {timeout} s; log:\n{self.log_text()[-6000:]}"
            time.sleep(0.1)

    def terminate(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM and wait; returns the exit code (None if it had to be killed after `timeout`)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)


class Cluster:
    """API and worker processes sharing one database, one storage directory and one SECRET_KEY."""

    def __init__(self, workdir, database_url, common_env=None):
        self.workdir = str(workdir)
        self.database_url = database_url
        self.storage_dir = os.path.join(self.workdir, "storage")
        os.makedirs(self.storage_dir, exist_ok=True)
        self.common_env = dict(common_env or {})
        self.procs = []

    def _new(self, name, role, role_via, env):
        full = {"DATABASE_URL": self.database_url, "STORAGE_DIR": self.storage_dir, "INSTANCE_ID": name}
        full.update(self.common_env)
        full.update(env)
        p = Proc(name, role, os.path.join(self.workdir, name), full, role_via=role_via)
        self.procs.append(p)
        return p

    def api(self, name, role_via="flag", **env):
        return self._new(name, "api", role_via, env)

    def worker(self, name, role_via="env", **env):
        return self._new(name, "worker", role_via, env)

    def apis(self):
        return [p for p in self.procs if p.role == "api"]

    def workers(self):
        return [p for p in self.procs if p.role == "worker"]

    def wait_workers_registered(self, names, timeout=START_TIMEOUT_S):
        """Until the `workers` table has a row for each instance name (id = name or name/<n>)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            for p in self.procs:
                if p.name in names:
                    rc = p.proc.poll()
                    assert rc is None, f"{p.name} exited with {rc}; log:\n{p.log_text()[-6000:]}"
            try:
                ids = [row[0] for row in live_worker_ids(self.database_url)]
                last = ids
                if all(any(i == n or i.startswith(n + "/") for i in ids) for n in names):
                    return ids
            except RuntimeError as e:  # the table may not exist until the migrations ran
                last = str(e)
            assert time.monotonic() < deadline, \
                f"workers {names} not all in the workers table within {timeout} s (last: {last})"
            time.sleep(0.2)

    def upscaled_file(self, photo_id):
        return os.path.join(self.storage_dir, "upscaled", f"{photo_id}.jpg")

    def original_file(self, photo_id):
        return os.path.join(self.storage_dir, "originals", f"{photo_id}.jpg")

    def stop_all(self):
        """SIGTERM to every live process (all at once, then wait); {name: exit code}."""
        live = [p for p in self.procs if p.running()]
        for p in live:
            p.proc.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in live:
            try:
                codes[p.name] = p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[p.name] = None
        return codes

    def teardown(self):
        for p in self.procs:
            p.kill()
            if p in LIVE:
                LIVE.remove(p)


# ---------------------------------------------------------------- the API

class Api:
    """A user's view of one API process."""

    def __init__(self, proc, token=None):
        self.proc = proc
        self.http = session()
        self.token = token

    def _url(self, path):
        return self.proc.url + path

    def _headers(self):
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def register(self, username, password):
        return self.http.post(self._url("/register"), json={"username": username, "password": password},
                              timeout=60)

    def login(self, username, password):
        return self.http.post(self._url("/token"), data={"username": username, "password": password},
                              timeout=60)

    def upload(self, data, filename="pet.jpg"):
        return self.http.post(self._url("/upscale"), headers=self._headers(),
                              files={"file": (filename, data, "image/jpeg")}, timeout=60)

    def photos(self):
        r = self.http.get(self._url("/photos"), params={"limit": 1000}, headers=self._headers(), timeout=60)
        assert r.status_code == 200, (self.proc.name, r.status_code, r.text)
        return r.json()

    def download(self, photo_id, kind="upscaled"):
        return self.http.get(self._url(f"/photos/{photo_id}"), params={"type": kind},
                             headers=self._headers(), timeout=60)


# ---------------------------------------------------------------- photos



def available_photos():
    out = []
    for name in PHOTOS:
        try:
            photo(name)
            out.append(name)
        except Exception:  # noqa: BLE001 - a missing sample picture just is not used
            pass
    assert out, "no sample photo found (skimage / matplotlib data)"
    return out


def encode_jpeg(image, quality=90):
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def crop_jpeg(w, h, rng, names=None):
    """A w x h JPEG: a random region of a real photo (of aspect w:h, at a random size between w and the
    largest that fits), scaled to w x h. Never noise."""
    src = photo(rng.choice(names or available_photos()))
    max_cw = min(src.width, (src.height * w) // h)
    cw = rng.randint(min(w, max_cw), max_cw)
    ch = min(src.height, max(1, round(cw * h / w)))
    x = rng.randint(0, src.width - cw)
    y = rng.randint(0, src.height - ch)
    return encode_jpeg(src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.LANCZOS))


def whole_jpeg(w, h, name="chelsea"):
    """The whole photo scaled to w x h (for the bigger, slower photos)."""
    return encode_jpeg(photo(name).resize((w, h), Image.LANCZOS))


def image_size(path_or_bytes):
    if isinstance(path_or_bytes, bytes):
        path_or_bytes = io.BytesIO(path_or_bytes)
    with Image.open(path_or_bytes) as im:
        return im.size, im.format


def make_rng(seed=None):
    return random.Random(seed if seed is not None else int(os.environ.get("PETCAM_SCALE_SEED", "1234")))


# ---------------------------------------------------------------- worker log lines

_ID = r"[^\s:]+"
STARTED_RE = re.compile(
    rf"job (?P<job>{_ID}) photo (?P<photo>{_ID}): started by (?P<instance>\S+)/(?P<thread>\d+) "
    rf"\(attempt (?P<attempt>\d+)/(?P<max>\d+)\)")
COMPLETED_RE = re.compile(
    rf"job (?P<job>{_ID}) photo (?P<photo>{_ID}): completed (?P<w>\d+)x(?P<h>\d+) -> "
    rf"(?P<w4>\d+)x(?P<h4>\d+) in (?P<secs>[\d.]+) s")
LEASE_LOST_RE = re.compile(rf"job (?P<job>{_ID}) photo (?P<photo>{_ID}): .*lease lost")
RETURNED_RE = re.compile(rf"job (?P<job>{_ID}) photo (?P<photo>{_ID}): returned to the queue")
FAILED_RE = re.compile(rf"job (?P<job>{_ID}) photo (?P<photo>{_ID}): (?:attempt \d+/\d+ )?failed")
TIMESTAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?)")


def job_events(text, source):
    """Every job line of a log as dicts: kind (started, completed, lease_lost, returned, failed), the
    regex groups, `source` (whose log) and the line."""
    events = []
    for line in text.splitlines():
        for kind, rx in (("started", STARTED_RE), ("completed", COMPLETED_RE), ("lease_lost", LEASE_LOST_RE),
                         ("returned", RETURNED_RE), ("failed", FAILED_RE)):
            m = rx.search(line)
            if m:
                ev = {k: v for k, v in m.groupdict().items()}
                ev.update(kind=kind, source=source, line=line)
                events.append(ev)
                break
    return events
