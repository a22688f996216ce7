"""Process lifecycle: kill -9 and SIGTERM never lose a job; the generated secret key persists."""

import os
import stat
import time

from conftest import Client, assert_upscaled_of, jpeg, logged_in_client, register_and_login

# Big enough that the job is seen `processing` for a few seconds (x4fast, 2 cores: ~5 s).
SLOW = (960, 720)


def upload(client, data):
    r = client.upload(data)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["id"]


def check_completed(server, client, photo_id, original):
    r = client.get(f"/photos/{photo_id}")
    assert r.status_code == 200, r.text
    assert_upscaled_of(r.content, original)
    assert client.get(f"/photos/{photo_id}?type=original").content == original
    # No half-written or orphaned files: exactly the files of this photo (original, result, thumbnail, preview).
    assert server.storage_files() == [f"storage/originals/{photo_id}.jpg",
                                      f"storage/previews/{photo_id}.preview.jpg",
                                      f"storage/previews/{photo_id}.thumbnail.jpg",
                                      f"storage/upscaled/{photo_id}.jpg"]


def test_kill_9_while_processing_then_restart(start_server):
    # The lease (60 s) is far longer than the wait below: the restart must take the job back at once.
    server = start_server(JOB_LEASE_SECONDS="60")
    c = logged_in_client(server)
    original = jpeg(*SLOW, "chelsea")
    photo_id = upload(c, original)
    c.wait_status(photo_id, want="processing", interval=0.05)
    time.sleep(0.5)
    server.kill()
    server.restart()
    t0 = time.monotonic()
    c.wait_status(photo_id, timeout=45)
    assert time.monotonic() - t0 < 45
    check_completed(server, c, photo_id, original)
    # Still exactly one photo for the user.
    assert [e["id"] for e in c.photos()] == [photo_id]


def test_kill_9_right_after_upload_then_restart(start_server):
    server = start_server(JOB_LEASE_SECONDS="5")
    c = logged_in_client(server)
    original = jpeg(640, 480, "coffee")
    photo_id = upload(c, original)
    server.kill()
    server.restart()
    c.wait_status(photo_id, timeout=60)
    check_completed(server, c, photo_id, original)


def test_sigterm_while_processing(start_server):
    server = start_server()
    c = logged_in_client(server)
    original = jpeg(*SLOW, "grace_hopper")
    photo_id = upload(c, original)
    queued = upload(c, jpeg(64, 48, "coffee"))  # waits behind it in the queue
    c.wait_status(photo_id, want="processing", interval=0.05)
    rc, seconds = server.terminate(timeout=30)
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert seconds < 30
    server.restart()
    c.wait_status(photo_id, timeout=60)
    c.wait_status(queued, timeout=60)
    r = c.get(f"/photos/{photo_id}")
    assert r.status_code == 200
    assert_upscaled_of(r.content, original)


def test_sigterm_idle_exits_quickly(start_server):
    server = start_server()
    logged_in_client(server)  # it has served something
    rc, seconds = server.terminate(timeout=30)
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert seconds < 10, f"idle server took {seconds:.1f} s to stop"


def test_generated_secret_key_persists(start_server):
    server = start_server(SECRET_KEY=None)
    key_path = server.path("secret_key")
    assert os.path.isfile(key_path), "no DATA_DIR/secret_key without SECRET_KEY"
    mode = stat.S_IMODE(os.stat(key_path).st_mode)
    assert mode == 0o600, oct(mode)
    with open(key_path, "rb") as f:
        key = f.read()
    assert len(key.strip()) >= 32, "a short secret key"

    c = Client(server)
    register_and_login(server, c)
    assert c.get("/photos").status_code == 200

    rc, _ = server.terminate()
    assert rc == 0
    server.restart()
    with open(key_path, "rb") as f:
        assert f.read() == key, "the key changed across a restart"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    # The token issued before the restart still works.
    r = c.get("/photos")
    assert r.status_code == 200, (r.status_code, r.text)

    # Another data dir gets another key: there is no built-in default.
    other = start_server(SECRET_KEY=None)
    with open(other.path("secret_key"), "rb") as f:
        assert f.read() != key
