"""The Docker deployment built and run for real: deploy/Dockerfile and deploy/docker-compose.yml.

Run by `make test-docker` (tests/docker/run.sh starts an engine and makes the base images first). Everything
stays on loopback: the compose override (tests/docker/docker-compose.test.yml) puts every service in the
host's network namespace on 127.0.0.1, since the engine here runs without a bridge or iptables.

The tests run in file order and share one deployment: build (twice: as found, then cached), up, a user's
upload completed by a worker container, /metrics, a worker killed mid-job and its job finished by the other,
down + up keeping the account and photos, then down -v. Figures are printed at the end.

Environment: DOCKER (default docker), DOCKER_COMPOSE (default docker-compose; `docker compose` works too),
PETCAM_HOST_BIN (a host build of petcam for the job time on the host; default build/release/petcam, skipped
when missing), PETCAM_DOCKER_KEEP=1 (leave the deployment up at the end).
"""

import io
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from petcam_testlib import photo  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [ROOT / "deploy" / "docker-compose.yml", ROOT / "tests" / "docker" / "docker-compose.test.yml"]
DOCKER = os.environ.get("DOCKER", "docker")
DOCKER_COMPOSE = shlex.split(os.environ.get("DOCKER_COMPOSE", "docker-compose"))
PROJECT = "petcamtest"
IMAGE = "petcam:local"
BUILD_TIMEOUT_S = 3600
JOB_TIMEOUT_S = 300
LEASE_S = 6

FIGURES = []  # (what, value), printed at the end


def figure(what, value):
    FIGURES.append((what, value))
    print(f"\n[figure] {what}: {value}", flush=True)


def run(argv, timeout=120, check=True, **kw):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg_bytes(image, quality=92):
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def image_size(data):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def wait_until(predicate, timeout, interval=0.5, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Deployment:
    def __init__(self, tmp):
        self.api_port = free_port()
        self.pg_port = free_port()
        self.env_file = tmp / "compose.env"
        self.env = {
            "POSTGRES_USER": "petuser",
            "POSTGRES_DB": "petdb",
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "SECRET_KEY": secrets.token_hex(32),
            "PETCAM_TEST_PGPORT": str(self.pg_port),
            "PETCAM_TEST_API_PORT": str(self.api_port),
            "PETCAM_TEST_WORKER1_PORT": str(free_port()),
            "PETCAM_TEST_WORKER2_PORT": str(free_port()),
            "PETCAM_TEST_LEASE_SECONDS": str(LEASE_S),
        }
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.files = COMPOSE_FILES
        self.files = [self.merged(tmp / "compose.merged.yml")]

    def merged(self, path):
        """The base file and the override as Compose itself merges them (`config`), less the published ports of
        host-network services. Compose 1.29 refuses those ("host" network_mode is incompatible with
        port_bindings) where the engine would only discard them, and it cannot remove a key of the base file
        from an override (v2's `!reset`): that one key is all that differs from the real file."""
        doc = yaml.safe_load(self.compose("config").stdout)
        for name, service in doc["services"].items():
            if service.get("network_mode") == "host" and service.pop("ports", None):
                print(f"\n(test) {name}: published ports dropped, host networking", flush=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def compose(self, *args, timeout=300, check=True):
        argv = [*DOCKER_COMPOSE, "-p", PROJECT, "--env-file", str(self.env_file)]
        for f in self.files:
            argv += ["-f", str(f)]
        return run([*argv, *args], timeout=timeout, check=check, cwd=ROOT)

    def container(self, service):
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def inspect(self, container, fmt):
        return run([DOCKER, "inspect", "-f", fmt, container]).stdout.strip()

    def logs(self, container):
        res = run([DOCKER, "logs", container], check=False)
        return res.stdout + res.stderr

    def health(self):
        try:
            return requests.get(self.base + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def up(self):
        """`up -d`, then the seconds until /health answers 200 and until Docker reports the api healthy."""
        t0 = time.monotonic()
        self.compose("up", "-d", "--no-build", timeout=600)
        t_up = time.monotonic() - t0
        wait_until(self.health, 180, 0.2, "/health")
        t_http = time.monotonic() - t0
        api = self.container("api")
        wait_until(lambda: self.inspect(api, "{{.State.Health.Status}}") == "healthy", 180, 0.5, "api healthy")
        t_healthy = time.monotonic() - t0
        return t_up, t_http, t_healthy


class User:
    def __init__(self, base, username, password):
        self.base, self.username, self.password = base, username, password
        self.token = None

    def login(self):
        r = requests.post(self.base + "/token", data={"username": self.username, "password": self.password}, timeout=30)
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]

    def h(self):
        return {"Authorization": f"Bearer {self.token}"}

    def upload(self, data):
        r = requests.post(self.base + "/upscale", headers=self.h(), timeout=60,
                          files={"file": ("photo.jpg", data, "image/jpeg")}, data={"lat": "37.5665", "lng": "126.978"})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def entry(self, photo_id):
        r = requests.get(self.base + "/photos", headers=self.h(), timeout=30)
        assert r.status_code == 200, r.text
        return next((p for p in r.json() if p["id"] == photo_id), None)

    def download(self, photo_id, kind="upscaled"):
        r = requests.get(self.base + f"/photos/{photo_id}", params={"type": kind}, headers=self.h(), timeout=60)
        assert r.status_code == 200, (r.status_code, r.text[:200])
        return r.content

    def wait_status(self, photo_id, want, timeout=JOB_TIMEOUT_S):
        def done():
            e = self.entry(photo_id)
            assert e is not None, f"photo {photo_id} is gone"
            assert e["status"] != "failed", e
            return e if e["status"] in want else None

        return wait_until(done, timeout, 0.2, f"photo {photo_id} {want}")


def job_seconds(log, photo_id):
    m = re.search(rf"photo {photo_id}: completed \d+x\d+ -> \d+x\d+ in ([0-9.]+) s", log)
    return float(m.group(1)) if m else None


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    created_env = False
    if not (ROOT / ".env").exists():
        # The compose file's env_file is ../.env; the settings this test needs come from its override.
        (ROOT / ".env").write_text("# written by tests/docker for make test-docker; removed at its end\n")
        created_env = True
    d = Deployment(tmp_path_factory.mktemp("docker"))
    d.compose("down", "-v", "--remove-orphans", check=False)  # a previous run's leftovers
    yield d
    try:
        if os.environ.get("PETCAM_DOCKER_KEEP") != "1":
            for service in ("api", "worker", "worker2", "db"):
                ids = d.compose("ps", "-q", service, check=False).stdout.split()
                if ids:
                    log = d.logs(ids[0]).splitlines()
                    print(f"\n--- last log lines of {service} ---\n" + "\n".join(log[-15:]))
            d.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
    finally:
        if created_env:
            (ROOT / ".env").unlink()
        print("\n=== make test-docker figures ===")
        for what, value in FIGURES:
            print(f"{what:<58} {value}")


STATE = {}


def test_image_builds_and_caches(dep):
    existed = run([DOCKER, "image", "inspect", IMAGE], check=False).returncode == 0
    argv = [DOCKER, "build", "--network", "host", "--build-arg", "JOBS=2", "-f", "deploy/Dockerfile", "-t", IMAGE, "."]
    for attempt in ("first", "second"):
        t0 = time.monotonic()
        res = run(argv, timeout=BUILD_TIMEOUT_S, cwd=ROOT)
        label = f"image build, {attempt} ({'image existed before' if existed or attempt == 'second' else 'no image before'})"
        figure(label, f"{time.monotonic() - t0:.1f} s")
    assert "Using cache" in res.stdout or "CACHED" in res.stdout + res.stderr
    size = int(run([DOCKER, "image", "inspect", "-f", "{{.Size}}", IMAGE]).stdout)
    figure("image size petcam:local", f"{size / 1e6:.0f} MB")
    for base in ("debian:12", "debian:12-slim", "postgres:15"):
        s = run([DOCKER, "image", "inspect", "-f", "{{.Size}}", base], check=False).stdout.strip()
        if s:
            figure(f"image size {base}", f"{int(s) / 1e6:.0f} MB")
    out = run([DOCKER, "run", "--rm", "--network", "host", IMAGE, "version"]).stdout
    assert out.strip(), "petcam version printed nothing"


def test_up_turns_healthy(dep):
    t_up, t_http, t_healthy = dep.up()
    figure("compose up -d (db, api, 2 workers) returned after", f"{t_up:.1f} s")
    figure("from up to /health 200", f"{t_http:.1f} s")
    figure("from up to Docker's api health 'healthy' (check every 1 s)", f"{t_healthy:.1f} s")
    r = requests.get(dep.base + "/health", timeout=5)
    assert r.json() == {"status": "ok", "version": "1.0.0"}


def test_containers_run_as_petcam_uid_10001(dep):
    for service in ("api", "worker", "worker2"):
        c = dep.container(service)
        assert dep.inspect(c, "{{.State.Running}}") == "true", service
        out = run([DOCKER, "exec", c, "id", "-u"]).stdout.strip()
        assert out == "10001", f"{service} runs as uid {out}"
        # PID 1 is petcam itself, as that user.
        status = run([DOCKER, "exec", c, "cat", "/proc/1/status"]).stdout
        assert re.search(r"^Uid:\s+10001\s", status, re.M), status
    for service in ("worker", "worker2"):
        assert dep.inspect(dep.container(service), "{{if .State.Health}}has{{else}}none{{end}}") == "none"


def test_upload_is_upscaled_by_a_worker_container(dep):
    user = User(dep.base, "alice", "wonderland")
    r = requests.post(dep.base + "/register", json={"username": user.username, "password": user.password}, timeout=30)
    assert r.status_code == 200, r.text
    user.login()
    original = jpeg_bytes(photo("chelsea"))  # skimage's cat, 451x300
    photo_id = user.upload(original)
    t0 = time.monotonic()
    entry = user.wait_status(photo_id, ("completed",))
    figure("chelsea 451x300: upload to completed (via the API)", f"{time.monotonic() - t0:.1f} s")
    up = user.download(photo_id)
    w, h = image_size(original)
    assert image_size(up) == (4 * w, 4 * h)
    assert user.download(photo_id, "original") == original
    assert entry["upscaled_path"]

    by = {s: job_seconds(dep.logs(dep.container(s)), photo_id) for s in ("worker", "worker2")}
    done = [s for s, secs in by.items() if secs is not None]
    assert len(done) == 1, f"completed by {done}"
    assert job_seconds(dep.logs(dep.container("api")), photo_id) is None, "the api container ran a job"
    figure(f"chelsea 451x300 job time in a container ({done[0]}, log)", f"{by[done[0]]:.2f} s")

    # The files in the shared volume belong to the image's user.
    for path in (f"/data/storage/originals/{photo_id}.jpg", f"/data/storage/upscaled/{photo_id}.jpg"):
        owner = run([DOCKER, "exec", dep.container("api"), "stat", "-c", "%u", path]).stdout.strip()
        assert owner == "10001", (path, owner)
    STATE.update(user=user, photo_id=photo_id, original=original, upscaled=up, chelsea=original)


def test_metrics_count_two_workers(dep):
    def two():
        text = requests.get(dep.base + "/metrics", timeout=10).text
        return "petcam_workers 2" in text.splitlines() and text

    text = wait_until(two, 30, 0.5, "petcam_workers 2")
    assert 'petcam_jobs{state="completed"} 1' in text


def test_killed_worker_job_is_finished_by_the_other(dep):
    user = STATE["user"]
    big = photo("grace_hopper")  # matplotlib's sample photo, 512x600; 2x so that the job takes a while
    big = big.resize((big.width * 2, big.height * 2))
    data = jpeg_bytes(big)
    photo_id = user.upload(data)

    def holder():
        for s in ("worker", "worker2"):
            if re.search(rf"photo {photo_id}: started by", dep.logs(dep.container(s))):
                return s
        return None

    first = wait_until(holder, 60, 0.2, "a worker to start the big job")
    other = "worker2" if first == "worker" else "worker"
    victim = dep.container(first)
    time.sleep(0.5)  # inside the job (several seconds on 2 cores), before it is done
    assert user.entry(photo_id)["status"] == "processing"
    t_kill = time.monotonic()
    run([DOCKER, "kill", victim])
    entry = user.wait_status(photo_id, ("completed",))
    figure(f"1024x1200 job: from docker kill of {first} to completed by {other}", f"{time.monotonic() - t_kill:.1f} s")
    log = dep.logs(dep.container(other))
    instance = {"worker": "test-worker-1", "worker2": "test-worker-2"}[other]
    assert re.search(rf"photo {photo_id}: started by {instance}/", log), log[-2000:]
    secs = job_seconds(log, photo_id)
    assert secs is not None, f"{other} did not complete the job:\n{log[-2000:]}"
    figure(f"1024x1200 job time in a container ({other}, log)", f"{secs:.2f} s")
    assert job_seconds(dep.logs(victim), photo_id) is None
    assert image_size(user.download(photo_id)) == (4 * big.width, 4 * big.height)
    assert entry["status"] == "completed"
    restarted = dep.inspect(victim, "{{.State.Running}} {{.RestartCount}}")
    figure(f"killed {first} afterwards (running, restart count)", restarted)
    STATE.update(big=data, big_id=photo_id)


def test_down_then_up_keeps_account_and_photos(dep):
    dep.compose("down", timeout=300)
    t_up, t_http, t_healthy = dep.up()
    figure("second up (volumes kept): to /health 200", f"{t_http:.1f} s")
    user = STATE["user"]
    user.login()  # the account is in the pgdata volume
    assert user.entry(STATE["photo_id"])["status"] == "completed"
    assert user.download(STATE["photo_id"], "original") == STATE["original"]
    assert user.download(STATE["photo_id"]) == STATE["upscaled"]
    assert user.download(STATE["big_id"], "original") == STATE["big"]


def test_upscale_command_in_a_container_and_on_the_host(dep, tmp_path):
    """`petcam upscale` on the same photos, in the image and on the host: the same work, process start and
    model load included (the job times above exclude those)."""
    binary = Path(os.environ.get("PETCAM_HOST_BIN", ROOT / "build" / "release" / "petcam"))
    tmp_path.chmod(0o777)  # the container's user (10001) writes its output here
    for name, data in (("chelsea 451x300", STATE["chelsea"]), ("1024x1200", STATE["big"])):
        src = tmp_path / "in.jpg"
        src.write_bytes(data)
        src.chmod(0o644)
        t0 = time.monotonic()
        run([DOCKER, "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/work", IMAGE,
             "upscale", "/work/in.jpg", "/work/out-container.jpg", "--model", "x4fast"], timeout=600)
        figure(f"petcam upscale {name} in a container (docker run, wall)", f"{time.monotonic() - t0:.2f} s")
        w, h = image_size(data)
        assert image_size((tmp_path / "out-container.jpg").read_bytes()) == (4 * w, 4 * h)
        if not binary.is_file():
            print(f"\n(test) {binary} is missing: no host figure (set PETCAM_HOST_BIN)")
            continue
        t0 = time.monotonic()
        run([str(binary), "upscale", str(src), str(tmp_path / "out-host.jpg"), "--model", "x4fast"], timeout=600)
        figure(f"petcam upscale {name} on the host ({binary}, wall)", f"{time.monotonic() - t0:.2f} s")
