"""POST /register, POST /token and the Bearer check on every photo route."""

import threading
import time
import uuid

import pytest

from conftest import (SECRET, UUID_RE, Client, assert_422, assert_detail, forge_jwt, jpeg,
                      jwt_parts, new_username, register_and_login)


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers(ACCESS_TOKEN_EXPIRE_MINUTES="2")


def test_register_returns_user(server):
    c = Client(server)
    name = new_username()
    r = c.register(name, "password123")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "username", "is_active"}, body
    assert UUID_RE.match(body["id"]), body
    assert body["username"] == name
    assert body["is_active"] is True


def test_register_duplicate(server):
    c = Client(server)
    name = new_username()
    assert c.register(name, "password123").status_code == 200
    assert_detail(c.register(name, "another-password"), 400, "Username already registered")
    # The first password still works: the duplicate changed nothing.
    assert c.login(name, "password123").status_code == 200
    assert c.login(name, "another-password").status_code == 401


def test_register_validation(server):
    c = Client(server)
    assert_422(c.register("ab", "password123"), ["body", "username"])
    assert_422(c.register("a" * 51, "password123"), ["body", "username"])
    assert_422(c.register(new_username(), "12345"), ["body", "password"])
    assert_422(c.post("/register", json={"password": "password123"}), ["body", "username"])
    assert_422(c.post("/register", json={"username": new_username()}), ["body", "password"])
    assert_422(c.post("/register", json={}), ["body", "username"], ["body", "password"])
    assert_422(c.post("/register", data=b"not json", headers={"Content-Type": "application/json"}))
    assert_422(c.post("/register", data=b"{\"username\": ", headers={"Content-Type": "application/json"}))
    assert_422(c.post("/register", data={"username": new_username(), "password": "password123"}))
    assert_422(c.post("/register", json=["x", "y"]))
    # A number beyond double's range: valid JSON grammar, once a 500 (found by fuzz_json_body).
    assert_422(c.post("/register", data=b'{"username": "abcd", "password": "abcdef", "n": 1e999}',
                      headers={"Content-Type": "application/json"}))
    assert_422(c.post("/register", json={"username": 12345, "password": "password123"}), ["body", "username"])
    # The boundaries themselves are accepted.
    short = "u" + uuid.uuid4().hex[:2]
    assert c.register(short, "123456").status_code == 200
    long = ("l" + uuid.uuid4().hex * 2)[:50]
    assert len(long) == 50
    r = c.register(long, "123456")
    assert r.status_code == 200, r.text
    assert r.json()["username"] == long


def test_token_and_claims(server):
    c = Client(server)
    name = new_username()
    user_id = c.register(name, "password123").json()["id"]
    t0 = int(time.time())
    r = c.login(name, "password123")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    header, payload, _ = jwt_parts(body["access_token"])
    assert header["alg"] == "HS256"
    assert payload["sub"] == user_id
    assert abs(payload["iat"] - t0) <= 5
    assert payload["exp"] - payload["iat"] == 2 * 60  # ACCESS_TOKEN_EXPIRE_MINUTES=2
    # Signed with SECRET_KEY: re-signing the same header+payload gives the same token.
    assert forge_jwt(payload, header=header) == body["access_token"]
    # The whole OAuth2 password form is accepted too.
    r = c.post("/token", data={"grant_type": "password", "username": name, "password": "password123",
                               "scope": "", "client_id": "", "client_secret": ""})
    assert r.status_code == 200, r.text
    c.token = r.json()["access_token"]
    assert c.get("/photos").status_code == 200


def test_token_errors(server):
    c = Client(server)
    name = new_username()
    assert c.register(name, "password123").status_code == 200
    for form in ({"username": name, "password": "wrong-password"},
                 {"username": new_username(), "password": "password123"}):
        r = c.post("/token", data=form)
        assert_detail(r, 401, "Incorrect username or password")
        assert r.headers.get("WWW-Authenticate") == "Bearer"
    assert_422(c.post("/token", json={"username": name, "password": "password123"}))
    assert_422(c.post("/token", data={"username": name}), ["body", "password"])
    assert_422(c.post("/token", data={"password": "password123"}), ["body", "username"])


def _photo_routes():
    some_id = str(uuid.uuid4())
    multipart_one = {"files": {"file": ("x.jpg", jpeg(32, 24), "image/jpeg")}}
    multipart_many = {"files": [("files", ("a.jpg", jpeg(32, 24), "image/jpeg"))]}
    return [
        ("POST", "/upscale", multipart_one),
        ("POST", "/bestcut", multipart_many),
        ("GET", "/photos", {}),
        ("GET", f"/photos/{some_id}", {}),
        ("GET", f"/photos/{some_id}?type=original", {}),
        ("DELETE", f"/photos/{some_id}", {}),
    ]


def test_missing_or_non_bearer_auth(server):
    c = Client(server)
    for method, path, kw in _photo_routes():
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": ""},
                        {"Authorization": "Token abc.def.ghi"}):
            r = c.request(method, path, auth=False, headers=headers, **kw)
            assert_detail(r, 401, "Not authenticated")
            assert r.headers.get("WWW-Authenticate") == "Bearer", (method, path, headers)


def test_bad_tokens_rejected(server):
    c = Client(server)
    register_and_login(server, c)
    now = int(time.time())
    good = {"sub": c.user_id, "iat": now, "exp": now + 600}
    # Positive control: a token forged with the server's key works, so the refusals below are real.
    c2 = Client(server)
    c2.token = forge_jwt(good)
    assert c2.get("/photos").status_code == 200

    bad_tokens = {
        "garbage": "not-a-token",
        "three garbage parts": "abc.def.ghi",
        "expired": forge_jwt({"sub": c.user_id, "iat": now - 3600, "exp": now - 60}),
        "other key": forge_jwt(good, key="some-other-secret-key-0123456789abcdef"),
        "alg none": forge_jwt(good, alg="none"),
        "alg none, signature kept": forge_jwt(good, header={"alg": "none", "typ": "JWT"}, alg="HS256"),
        "HS512 with the right key": forge_jwt(good, alg="HS512"),
        "unknown user": forge_jwt({"sub": str(uuid.uuid4()), "iat": now, "exp": now + 600}),
        "no exp": forge_jwt({"sub": c.user_id, "iat": now}),
        "tampered payload": ".".join([c.token.split(".")[0],
                                      forge_jwt({**jwt_parts(c.token)[1], "sub": str(uuid.uuid4())})
                                      .split(".")[1],
                                      c.token.split(".")[2]]),
    }
    for method, path, kw in _photo_routes():
        for what, token in bad_tokens.items():
            r = c.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
            assert r.status_code == 401, (what, method, path, r.status_code, r.text)
            assert_detail(r, 401, "Could not validate credentials")
            assert r.headers.get("WWW-Authenticate") == "Bearer", (what, method, path)
    # Nothing was stored by any of the refused uploads.
    assert c.photos() == []


def test_bearer_scheme_is_case_insensitive(server):
    # FastAPI's OAuth2PasswordBearer accepts "bearer" in any case.
    c = Client(server)
    register_and_login(server, c)
    r = c.get("/photos", headers={"Authorization": f"bearer {c.token}"})
    assert r.status_code == 200, r.text


def test_password_never_in_log(server):
    c = Client(server)
    name = new_username()
    secret_password = "Pa55-" + uuid.uuid4().hex
    assert c.register(name, secret_password).status_code == 200
    r = c.login(name, secret_password)
    assert r.status_code == 200
    token = r.json()["access_token"]
    time.sleep(0.2)
    log = server.log_text()
    assert secret_password not in log
    assert token not in log
    assert SECRET not in log


def test_concurrent_duplicate_registration(server):
    # Only one of several simultaneous registrations of one name wins; the rest get 400, not 500.
    name = new_username("race")
    clients = [Client(server) for _ in range(6)]
    results = [None] * len(clients)

    def go(i):
        results[i] = clients[i].register(name, f"password-{i}")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [400] * (len(clients) - 1), [(r.status_code, r.text) for r in results]
    for r in results:
        if r.status_code == 400:
            assert_detail(r, 400, "Username already registered")
    winner = next(i for i, r in enumerate(results) if r.status_code == 200)
    assert clients[0].login(name, f"password-{winner}").status_code == 200
