"""/docs (Swagger UI) and /redoc (ReDoc) in a real headless Chromium against the real server.

Proves what a person using the docs would notice: every route of the OpenAPI document is listed, the
Authorize button logs in through /token and "Try it out" then works on a protected route, ReDoc renders
the document, and the pages load nothing from any other host (no CDN, no web fonts) and log no errors.

Needs Debian's chromium, chromium-driver and python3-selenium (skipped when /usr/bin/chromium is absent),
and the web assets from scripts/fetch-web-assets.sh.

Run:  PETCAM_BIN=build/release/petcam /usr/bin/python3 -m pytest -q tests/browser
"""

import os
import sys
import time
import urllib.parse
import uuid

import pytest
import requests

from conftest import CHROMIUM, HOST, REPO_ROOT, WAIT_S

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402


def operations(doc):
    """(method, path, operation) for every operation of the document, in document order."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                yield method, path, op


@pytest.fixture(scope="module")
def document(server):
    """The OpenAPI document as the server serves it (the pages load this very URL)."""
    r = requests.get(server + "/openapi.json", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def user(server):
    """A registered user: (username, password)."""
    username, password = "docs_" + uuid.uuid4().hex[:12], "paws-" + uuid.uuid4().hex[:12]
    r = requests.post(server + "/register", json={"username": username, "password": password}, timeout=10)
    assert r.status_code == 200, r.text
    return username, password


# ---------------------------------------------------------------- Swagger UI

def open_page(browser, url, ready_css):
    """Loads url and waits for ready_css; on a timeout, fails with what the console said."""
    browser.driver.get(url)
    if not browser.wait_quietly(EC.presence_of_element_located((By.CSS_SELECTOR, ready_css))):
        browser.drain()
        console = "\n".join(f"{e['level']}: {e['message']}" for e in browser.console)
        pytest.fail(f"{url} did not render {ready_css!r} in {WAIT_S} s; console:\n{console}")


def open_swagger(browser, base):
    open_page(browser, base + "/docs", ".opblock .opblock-summary-path")


def shown_paths(browser):
    """(METHOD, path) of every operation block Swagger UI rendered."""
    shown = set()
    for block in browser.driver.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.strip()
        path_el = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
        path = path_el.get_attribute("data-path") or path_el.text
        shown.add((method.upper(), path.replace("\u200b", "").strip()))
    return shown


def test_swagger_ui_lists_every_operation(server, browser, document):
    open_swagger(browser, server)
    expected = {(m.upper(), p) for m, p, _ in operations(document)}
    assert len(expected) >= 8
    browser.wait(lambda _: expected <= shown_paths(browser))
    assert shown_paths(browser) == expected
    assert document["info"]["title"] == "PetCam server"
    assert "PetCam server" in browser.driver.find_element(By.CSS_SELECTOR, ".info .title").text
    browser.drain()


def test_swagger_ui_authorize_then_try_it_out(server, browser, user):
    username, password = user
    d = browser.driver
    open_swagger(browser, server)

    # The Authorize dialog: OAuth2 password flow against tokenUrl (/token).
    browser.wait(EC.element_to_be_clickable((By.CSS_SELECTOR, ".auth-wrapper button.authorize"))).click()
    dialog = browser.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")))
    assert "OAuth2PasswordBearer" in dialog.text
    assert "/token" in dialog.text  # the token URL it will post to
    dialog.find_element(By.ID, "oauth_username").send_keys(username)
    dialog.find_element(By.ID, "oauth_password").send_keys(password)
    dialog.find_element(By.XPATH, ".//button[contains(@class,'authorize') and normalize-space()='Authorize']").click()
    # Logged in: the dialog now offers Logout (and says Authorized); a failed login shows an error instead.
    logout = (By.XPATH, "//div[contains(@class,'modal-ux')]//button[normalize-space()='Logout']")
    if not browser.wait_quietly(EC.visibility_of_element_located(logout)):
        pytest.fail("the Authorize dialog did not log in; it shows:\n" + dialog.text)
    assert "Authorized" in dialog.text
    assert not dialog.find_elements(By.CSS_SELECTOR, ".errors")
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Close']").click()
    browser.wait(EC.invisibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")))
    # The padlocks on the protected operations now show as locked (authorized).
    assert d.find_elements(By.CSS_SELECTOR, ".auth-wrapper button.authorize.locked")

    # GET /photos: expand, Try it out, Execute; the live response must be 200.
    block = d.find_element(By.CSS_SELECTOR, "#operations-photos-list_photos")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    browser.wait(EC.element_to_be_clickable((By.CSS_SELECTOR, "#operations-photos-list_photos .try-out__btn"))).click()
    browser.wait(EC.element_to_be_clickable((By.CSS_SELECTOR, "#operations-photos-list_photos .btn.execute"))).click()
    status = (By.CSS_SELECTOR, "#operations-photos-list_photos .live-responses-table .response .response-col_status")
    browser.wait(EC.visibility_of_element_located(status))
    code = d.find_element(*status).text.strip().split()[0]
    live = d.find_element(By.CSS_SELECTOR, "#operations-photos-list_photos .live-responses-table").text
    assert code == "200", f"GET /photos from Try it out answered {code}:\n{live}"
    curl = d.find_element(By.CSS_SELECTOR, "#operations-photos-list_photos .curl-command").text
    assert "Authorization: Bearer " in curl, curl
    browser.drain()


def test_swagger_ui_try_it_out_uploads_with_outscale_and_format(server, browser, user, tmp_path):
    """POST /upscale from Swagger's form with the Version 2 fields: the photo is stored with them."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
    from petcam_testlib import photo
    from selenium.webdriver.support.ui import Select

    username, password = user
    token = requests.post(server + "/token", data={"username": username, "password": password},
                          timeout=10).json()["access_token"]
    picture = tmp_path / "cat.png"
    photo("chelsea").resize((40, 30)).save(picture, format="PNG")

    d = browser.driver
    open_swagger(browser, server)
    # Authorize with the token directly is not offered for the password flow: reuse the dialog's state from
    # the earlier test when it ran, else log in here.
    if not d.find_elements(By.CSS_SELECTOR, ".auth-wrapper button.authorize.locked"):
        browser.wait(EC.element_to_be_clickable((By.CSS_SELECTOR, ".auth-wrapper button.authorize"))).click()
        dialog = browser.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")))
        dialog.find_element(By.ID, "oauth_username").send_keys(username)
        dialog.find_element(By.ID, "oauth_password").send_keys(password)
        dialog.find_element(By.XPATH, ".//button[contains(@class,'authorize') and normalize-space()='Authorize']").click()
        browser.wait(EC.visibility_of_element_located(
            (By.XPATH, "//div[contains(@class,'modal-ux')]//button[normalize-space()='Logout']")))
        dialog.find_element(By.XPATH, ".//button[normalize-space()='Close']").click()
        browser.wait(EC.invisibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")))

    op = "#operations-photos-upscale"
    d.find_element(By.CSS_SELECTOR, op + " .opblock-summary").click()
    browser.wait(EC.element_to_be_clickable((By.CSS_SELECTOR, op + " .try-out__btn"))).click()
    form = browser.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, op + " .opblock-body")))
    form.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(picture))
    row = lambda name: form.find_element(By.CSS_SELECTOR, f"tr[data-property-name='{name}']")
    outscale = row("outscale").find_element(By.CSS_SELECTOR, "input")
    outscale.clear()
    outscale.send_keys("2.5")
    Select(row("format").find_element(By.CSS_SELECTOR, "select")).select_by_visible_text("png")
    browser.wait(EC.element_to_be_clickable((By.CSS_SELECTOR, op + " .btn.execute"))).click()
    status = (By.CSS_SELECTOR, op + " .live-responses-table .response .response-col_status")
    browser.wait(EC.visibility_of_element_located(status))
    code = d.find_element(*status).text.strip().split()[0]
    live = d.find_element(By.CSS_SELECTOR, op + " .live-responses-table").text
    assert code == "200", f"POST /upscale from Try it out answered {code}:\n{live}"
    curl = d.find_element(By.CSS_SELECTOR, op + " .curl-command").text
    assert "outscale=2.5" in curl and "format=png" in curl, curl

    photos = requests.get(server + "/photos", headers={"Authorization": "Bearer " + token}, timeout=10).json()
    mine = [p for p in photos if p["original_path"].endswith(".png")]
    assert len(mine) == 1, photos
    assert mine[0]["outscale"] == 2.5 and mine[0]["format"] == "png", mine[0]
    assert (mine[0]["width"], mine[0]["height"]) == (40, 30), mine[0]
    browser.drain()


# ---------------------------------------------------------------- ReDoc

def test_redoc_renders_the_document(server, browser, document):
    doc = document
    d = browser.driver
    open_page(browser, server + "/redoc", ".api-info h1")
    title = d.find_element(By.CSS_SELECTOR, ".api-info h1")
    assert doc["info"]["title"] in title.text
    summaries = [op["summary"] for _, _, op in operations(doc)]

    def rendered(_):
        text = d.execute_script("return document.body.innerText")
        return all(s in text for s in summaries) and text

    text = browser.wait_quietly(rendered)
    if not text:
        text = d.execute_script("return document.body.innerText")
        pytest.fail(f"ReDoc does not show {[s for s in summaries if s not in text]}")
    for _, path, _ in operations(doc):
        assert path in text or path in d.page_source
    browser.drain()


# ---------------------------------------------------------------- offline and clean

def test_pages_load_nothing_from_other_hosts_and_log_no_errors(server, browser):
    # Visit both pages again so this test stands on its own, then judge everything seen in this module.
    for page, ready in (("/docs", ".opblock"), ("/redoc", ".api-content")):
        open_page(browser, server + page, ready)
        time.sleep(1)  # let late requests (fonts, workers, images) show up
        browser.drain()

    assert any(u.endswith("/openapi.json") for u in browser.requests), browser.requests
    # data:, blob: and the browser's own chrome:// pages never leave the machine; anything else that is
    # not on our host would.
    local_schemes = ("data", "blob", "about", "chrome", "chrome-untrusted", "devtools")
    foreign = [u for u in browser.requests
               if urllib.parse.urlsplit(u).scheme not in local_schemes and urllib.parse.urlsplit(u).hostname != HOST]
    assert not foreign, f"the docs pages reached beyond {HOST}: {sorted(set(foreign))}"

    severe = [e for e in browser.console if e.get("level") == "SEVERE" and "favicon" not in e.get("message", "")]
    assert not severe, "console errors:\n" + "\n".join(e["message"] for e in severe)
