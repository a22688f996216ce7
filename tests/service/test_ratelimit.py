"""Per-client-IP rate limits, and X-Forwarded-For honoured only from TRUSTED_PROXIES."""

import time

import pytest

from conftest import (TRUSTED_PROXY_IP, Client, assert_detail, jpeg, logged_in_client,
                      new_username, register_and_login)


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers(RATE_LIMIT_REGISTER="5/minute", RATE_LIMIT_TOKEN="10/minute",
                          RATE_LIMIT_UPSCALE="2/minute", RATE_LIMIT_BESTCUT="1/hour",
                          TRUSTED_PROXIES=f"{TRUSTED_PROXY_IP},10.255.0.0/16")


def assert_429(r, text, window_s):
    assert_detail(r, 429, f"Rate limit exceeded: {text}")
    retry = r.headers.get("Retry-After")
    assert retry is not None and retry.isdigit(), r.headers
    assert 0 < int(retry) <= window_s, retry


def register(client, headers=None):
    return client.register(new_username("rl"), "password123", headers=headers or {})


def test_register_limit(server):
    c = Client(server)
    for i in range(5):
        r = register(c)
        assert r.status_code == 200, (i, r.status_code, r.text)
    assert_429(register(c), "5 per 1 minute", 60)
    assert_429(register(c), "5 per 1 minute", 60)
    # Another client address is not affected.
    assert register(Client(server)).status_code == 200


def test_token_limit(server):
    c = Client(server)
    name = new_username("rl")
    assert c.register(name, "password123").status_code == 200
    for i in range(10):
        password = "password123" if i % 2 == 0 else "wrong-password"  # failed logins count too
        r = c.login(name, password)
        assert r.status_code == (200 if i % 2 == 0 else 401), (i, r.status_code, r.text)
    assert_429(c.login(name, "password123"), "10 per 1 minute", 60)
    assert Client(server).login(name, "password123").status_code == 200


def test_upscale_limit_is_per_ip(server):
    a = logged_in_client(server)
    ids = []
    for _ in range(2):
        r = a.upload(jpeg(32, 24))
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert_429(a.upload(jpeg(32, 24)), "2 per 1 minute", 60)
    # The refused upload stored nothing.
    assert sorted(e["id"] for e in a.photos()) == sorted(ids)
    # The same user from another address may still upload.
    b = Client(server)
    b.token = a.token
    assert b.upload(jpeg(32, 24)).status_code == 200
    for photo_id in ids:
        a.wait_status(photo_id)


def test_bestcut_limit(server):
    c = logged_in_client(server)
    assert c.bestcut([jpeg(32, 24)]).status_code == 200
    assert_429(c.bestcut([jpeg(32, 24)]), "1 per 1 hour", 3600)
    # /upscale has its own budget.
    assert c.upload(jpeg(32, 24)).status_code == 200


def test_forwarded_for_ignored_from_untrusted_peer(server):
    c = Client(server)
    for i in range(5):
        r = register(c, headers={"X-Forwarded-For": f"10.0.1.{i + 1}"})
        assert r.status_code == 200, r.text
    r = register(c, headers={"X-Forwarded-For": "10.0.1.99"})
    assert_429(r, "5 per 1 minute", 60)


def test_forwarded_for_from_trusted_proxy(server):
    proxy = Client(server, ip=TRUSTED_PROXY_IP)
    for i in range(5):
        r = register(proxy, headers={"X-Forwarded-For": "10.0.0.1"})
        assert r.status_code == 200, (i, r.status_code, r.text)
    assert_429(register(proxy, headers={"X-Forwarded-For": "10.0.0.1"}), "5 per 1 minute", 60)
    # Another forwarded client behind the same proxy has its own budget.
    for i in range(5):
        r = register(proxy, headers={"X-Forwarded-For": "10.0.0.2"})
        assert r.status_code == 200, (i, r.status_code, r.text)
    assert_429(register(proxy, headers={"X-Forwarded-For": "10.0.0.2"}), "5 per 1 minute", 60)


def test_forwarded_chain_through_trusted_proxies(server):
    # The client is the right-most address that is not a trusted proxy (10.255.0.0/16 is one).
    proxy = Client(server, ip=TRUSTED_PROXY_IP)
    for i in range(5):
        r = register(proxy, headers={"X-Forwarded-For": "10.0.5.1, 10.255.3.4"})
        assert r.status_code == 200, (i, r.status_code, r.text)
    r = register(proxy, headers={"X-Forwarded-For": "10.0.5.1, 10.255.7.7"})
    assert_429(r, "5 per 1 minute", 60)
    assert register(proxy, headers={"X-Forwarded-For": "10.0.5.2, 10.255.3.4"}).status_code == 200
    # A client cannot escape its limit by prepending a made-up address.
    r = register(proxy, headers={"X-Forwarded-For": "192.0.2.77, 10.0.5.1, 10.255.3.4"})
    assert_429(r, "5 per 1 minute", 60)


def test_limit_window_recovers(start_server):
    server = start_server(RATE_LIMIT_REGISTER="2/second")
    c = Client(server)
    refused = None
    for _ in range(8):
        r = register(c)
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
    assert refused is not None, "2/second never refused a burst of 8"
    assert_429(refused, "2 per 1 second", 1)
    time.sleep(int(refused.headers["Retry-After"]) + 0.2)
    r = register(c)
    assert r.status_code == 200, (r.status_code, r.text)


def test_logged_in_user_not_limited_by_others(server):
    # Sanity: the limiter does not count requests to unlimited routes.
    c = Client(server)
    register_and_login(server, c)
    for _ in range(30):
        assert c.get("/photos").status_code == 200
    assert c.get("/health", auth=False).status_code == 200
