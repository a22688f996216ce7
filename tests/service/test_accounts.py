"""Accounts (SPEC.md "Jobs and accounts > Accounts"): GET /users/me, POST /users/me/password, DELETE /users/me,
their errors and rate limit, a deletion while a job runs, and kill -9 in the middle of a deletion."""

import random
import threading
import time

import pytest
import requests

from conftest import (ISO_UTC_RE, Client, assert_422, assert_detail, jpeg, logged_in_client, new_username,
                      register_and_login, wait_until)

# Big enough that its job is seen `processing` for a few seconds (x4fast, 2 cores: ~5 s).
SLOW = (960, 720)
ME_KEYS = {"id", "username", "is_active", "created_at", "photo_count"}


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers()


def upload_ok(client, data):
    r = client.upload(data)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["id"]


def change_password(client, current, new, **kw):
    return client.post("/users/me/password", json={"current_password": current, "new_password": new}, **kw)


def delete_account(client, password, **kw):
    return client.delete("/users/me", json={"password": password}, **kw)


def files_of(server, photo_ids):
    return [f for f in server.storage_files() if any(pid in f for pid in photo_ids)]


# ---------------------------------------------------------------- GET /users/me

def test_me_fields_and_photo_count(server):
    c = logged_in_client(server)
    r = c.get("/users/me")
    assert r.status_code == 200, r.text
    me = r.json()
    assert set(me) == ME_KEYS, me
    assert me["id"] == c.user_id
    assert me["username"] == c.username
    assert me["is_active"] is True
    assert ISO_UTC_RE.match(me["created_at"]), me
    assert me["photo_count"] == 0
    ids = [upload_ok(c, jpeg(32, 24, "coffee")) for _ in range(2)]
    assert c.get("/users/me").json()["photo_count"] == 2
    assert c.delete(f"/photos/{ids[0]}").status_code == 200
    assert c.get("/users/me").json()["photo_count"] == 1
    # Another user's photos do not count.
    assert logged_in_client(server).get("/users/me").json()["photo_count"] == 0


def test_account_routes_need_a_token(server):
    anonymous = Client(server)
    for r in (anonymous.get("/users/me"), change_password(anonymous, "password123", "another-one"),
              delete_account(anonymous, "password123")):
        assert_detail(r, 401, "Not authenticated")
        assert r.headers.get("WWW-Authenticate") == "Bearer"
    c = Client(server)
    c.token = "not-a-token"
    assert_detail(c.get("/users/me"), 401, "Could not validate credentials")


# ---------------------------------------------------------------- POST /users/me/password

def test_password_change_refuses_every_older_token(server):
    c = logged_in_client(server)
    old_token = c.token
    second = Client(server)
    second.token = c.login(c.username, c.password).json()["access_token"]  # another device's token
    photo_id = upload_ok(c, jpeg(32, 24))
    assert c.get("/users/me").status_code == 200 and second.get("/users/me").status_code == 200

    r = change_password(c, c.password, "brand-new-password")
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Password changed"}
    for client in (c, second):
        for r in (client.get("/users/me"), client.get("/photos"), client.get(f"/photos/{photo_id}/info")):
            assert_detail(r, 401, "Could not validate credentials")
            assert r.headers.get("WWW-Authenticate") == "Bearer"
    assert c.token == old_token

    assert_detail(c.login(c.username, c.password), 401, "Incorrect username or password")
    r = c.login(c.username, "brand-new-password")
    assert r.status_code == 200, r.text
    c.token = r.json()["access_token"]
    assert c.get("/users/me").json()["id"] == c.user_id
    assert [p["id"] for p in c.photos()] == [photo_id]  # the photos stay

    # And once more: the token from the first change stops counting at the second.
    after_first = c.token
    assert change_password(c, "brand-new-password", "third-password").status_code == 200
    assert_detail(c.get("/users/me"), 401, "Could not validate credentials")
    c.token = c.login(c.username, "third-password").json()["access_token"]
    assert c.token != after_first and c.get("/users/me").status_code == 200


def test_password_change_errors(server):
    c = logged_in_client(server)
    assert_detail(change_password(c, "wrong-password", "another-password"), 400, "Incorrect password")
    assert_422(change_password(c, c.password, "short"), ["body", "new_password"])
    assert_422(change_password(c, c.password, "x" * 1025), ["body", "new_password"])
    assert_422(c.post("/users/me/password", json={}), ["body", "current_password"], ["body", "new_password"])
    assert_422(c.post("/users/me/password", json={"current_password": c.password}), ["body", "new_password"])
    assert_422(c.post("/users/me/password", json={"new_password": "another-password"}),
               ["body", "current_password"])
    assert_422(c.post("/users/me/password", json={"current_password": 123, "new_password": "another-password"}),
               ["body", "current_password"])
    assert_422(c.post("/users/me/password", data="not json", headers={"Content-Type": "application/json"}))
    # Nothing changed: the token and the password still work.
    assert c.get("/users/me").status_code == 200
    assert c.login(c.username, c.password).status_code == 200
    # A 1024-character password is allowed, as at registration.
    assert change_password(c, c.password, "y" * 1024).status_code == 200
    assert c.login(c.username, "y" * 1024).status_code == 200


# ---------------------------------------------------------------- DELETE /users/me

def test_delete_account_errors(server):
    c = logged_in_client(server)
    photo_id = upload_ok(c, jpeg(32, 24))
    assert_detail(delete_account(c, "wrong-password"), 400, "Incorrect password")
    assert_422(c.delete("/users/me", json={}), ["body", "password"])
    assert_422(c.delete("/users/me"))  # no body at all
    # Still all there.
    assert c.get("/users/me").json()["photo_count"] == 1
    assert c.get(f"/photos/{photo_id}?type=original").status_code == 200


def test_delete_account_while_its_job_runs(server):
    other = logged_in_client(server)
    kept = upload_ok(other, jpeg(40, 30, "coffee"))
    other.wait_status(kept)
    kept_files = files_of(server, [kept])
    assert len(kept_files) == 4, kept_files

    c = logged_in_client(server)
    running = upload_ok(c, jpeg(*SLOW, "chelsea"))
    waiting = upload_ok(c, jpeg(64, 48, "coffee"))
    thumbnail_only = upload_ok(c, jpeg(48, 36, "chelsea"))
    mine = [running, waiting, thumbnail_only]
    c.wait_status(running, want="processing", interval=0.02)
    log_offset = server.log_size()

    r = delete_account(c, c.password)
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Deleted successfully"}
    # The running job stops early (between tiles) and removes what it wrote.
    wait_until(lambda: "photo was deleted while processing" in server.log_text(log_offset), 30,
               message="the running job noticing its photo is gone")
    # A later job finishing means the single worker is past the deleted ones.
    barrier = upload_ok(other, jpeg(32, 24, "coffee"))
    other.wait_status(barrier)
    assert files_of(server, mine) == []
    assert f"photo {running}: completed" not in server.log_text(log_offset)

    for r in (c.get("/users/me"), c.get("/photos"), c.get(f"/photos/{running}?type=original")):
        assert_detail(r, 401, "Could not validate credentials")
    assert_detail(c.login(c.username, c.password), 401, "Incorrect username or password")

    # The other user's photo is untouched.
    assert files_of(server, [kept]) == kept_files
    assert other.get(f"/photos/{kept}").status_code == 200
    assert {p["id"] for p in other.photos()} == {kept, barrier}

    # The username is free again: a new account, with nothing of the old one.
    again = Client(server)
    r = again.register(c.username, "a-new-password")
    assert r.status_code == 200, r.text
    assert r.json()["id"] != c.user_id
    again.token = again.login(c.username, "a-new-password").json()["access_token"]
    me = again.get("/users/me").json()
    assert me["username"] == c.username and me["photo_count"] == 0
    assert again.photos() == []
    assert_detail(again.get(f"/photos/{waiting}/info"), 404)


# ---------------------------------------------------------------- the ACCOUNT rate limit

def test_account_rate_limit_is_10_per_minute_per_ip(start_server):
    server = start_server(RATE_LIMIT_ACCOUNT=None)  # the default
    c = logged_in_client(server)
    statuses = [c.get("/users/me").status_code for _ in range(8)]
    statuses.append(change_password(c, "wrong-password", "another-password").status_code)
    statuses.append(delete_account(c, "wrong-password").status_code)
    assert statuses == [200] * 8 + [400, 400], statuses
    # One budget for the three routes together.
    for r in (c.get("/users/me"), change_password(c, c.password, "another-password"),
              delete_account(c, c.password)):
        assert_detail(r, 429, "Rate limit exceeded: 10 per 1 minute")
        retry = r.headers.get("Retry-After")
        assert retry is not None and 0 < int(retry) <= 60, r.headers
    # Nothing happened to the account, and another address is not limited.
    other_ip = Client(server)
    other_ip.token = c.token
    assert other_ip.get("/users/me").status_code == 200
    assert c.login(c.username, c.password).status_code == 200
    # Photo routes are not counted against it.
    assert c.get("/photos").status_code == 200


# ---------------------------------------------------------------- kill -9 during a deletion

def test_kill_9_during_account_deletion_leaves_rows_and_files_agreeing(start_server):
    # No job workers: every photo keeps exactly its original and thumbnail, so files and rows are easy to match.
    server = start_server(JOB_WORKERS="0", ORPHAN_SWEEP_MIN_AGE_SECONDS="0")
    bystander = logged_in_client(server)
    bystander_photos = {upload_ok(bystander, jpeg(32, 24, "coffee")) for _ in range(3)}
    rng = random.Random(20260127)
    accounts = []  # (client, its photo ids)
    outcomes = []
    for _ in range(6):
        c = logged_in_client(server)
        photos = {upload_ok(c, jpeg(32 + i % 5, 24, "chelsea")) for i in range(40)}
        accounts.append((c, photos))

        def deletion(client=c):
            try:
                delete_account(client, client.password, timeout=30)
            except (requests.RequestException, AssertionError):
                pass  # the server was killed under it

        t = threading.Thread(target=deletion)
        t.start()
        # Argon2id takes ~100 ms before the transaction: kill before, during or after it, or while files go.
        time.sleep(rng.uniform(0.0, 0.2))
        server.kill()
        t.join(timeout=30)
        log_offset = server.log_size()
        server.restart()
        swept = "that no photo owns" in server.log_text(log_offset)

        # Every account so far is either whole or gone, and the files are exactly those of the photos left.
        left = set(bystander_photos)
        for client, ids in accounts:
            fresh = Client(server)
            r = fresh.login(client.username, client.password)
            if r.status_code == 200:
                fresh.token = r.json()["access_token"]
                assert {p["id"] for p in fresh.photos()} == ids, f"account {client.username} half-deleted"
                assert fresh.get("/users/me").json()["photo_count"] == len(ids)
                left |= ids
            else:
                assert_detail(r, 401, "Incorrect username or password")
                assert files_of(server, ids) == [], f"files of the deleted {client.username} left"
        expected = sorted([f"storage/originals/{pid}.jpg" for pid in left] +
                          [f"storage/previews/{pid}.thumbnail.jpg" for pid in left])
        assert server.storage_files() == expected
        kept = c.login(c.username, c.password).status_code == 200
        outcomes.append("kept" if kept else "deleted, orphans swept" if swept else "deleted")
    print("kill -9 during deletion, per round:", outcomes)
    assert {p["id"] for p in bystander.photos()} == bystander_photos
