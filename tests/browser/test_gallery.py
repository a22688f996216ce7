"""The web gallery at / in a real headless Chromium against the real server (x4fast, small real photos).

What a person using the app would notice: registering (the API's 422 lines shown), signing in and out,
uploading separate photos and a best-cut burst and watching them complete with their thumbnails, the
before/after viewer moved with the keyboard and zoomed to 100%, downloads that are the server's bytes,
deleting with confirmation, refusals in plain words (400, 413, 429), an expiring token and a refused one
both returning to sign-in, the account page, a phone-sized screen, accessible names, and the page loading
nothing from another host and logging no errors. The page's headers (CSP, nosniff, caching) are checked too.

Screenshots: set PETCAM_SCREENSHOTS=docs/screenshots to write them into the repository (the README shows them).

Run:  PETCAM_BIN=build/release/petcam /usr/bin/python3 -m pytest -q tests/browser/test_gallery.py
"""

import base64
import hashlib
import hmac
import io
import json
import os
import re
import sys
import time
import urllib.parse
import uuid

import pytest
import requests

from conftest import CHROMIUM, HOST, REPO_ROOT, WAIT_S, Browser

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)", allow_module_level=True)

from PIL import Image, ImageFilter  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
from petcam_testlib import photo  # noqa: E402

SECRET_KEY = "test"  # conftest starts the server with it: the expiry test signs a real token with it
MAX_UPLOAD_BYTES = 300_000
BESTCUT_LIMIT = 3  # per minute: the refusal test uses up what the burst upload leaves


@pytest.fixture(scope="module")
def server_env():
    return {"RATE_LIMIT_REGISTER": "0", "RATE_LIMIT_TOKEN": "0", "RATE_LIMIT_UPSCALE": "0",
            "RATE_LIMIT_BESTCUT": f"{BESTCUT_LIMIT}/minute", "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}


@pytest.fixture(scope="module")
def browser():
    b = Browser(1280, 900)
    b.expected_refusals = []  # (path, status) the tests provoke on purpose: the console logs each
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def user():
    return "cat_" + uuid.uuid4().hex[:10], "whiskers-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Small real photos (crops of skimage's cat), so a job takes a second or less: two for separate uploads
    and a burst of three in which only the middle one is sharp."""
    d = tmp_path_factory.mktemp("pictures")
    cat = photo("chelsea")
    paths = {}
    cat.crop((60, 30, 380, 270)).save(d / "face.png", format="PNG")  # 320x240: a job long enough to watch
    cat.crop((200, 60, 264, 108)).save(d / "ear.jpg", format="JPEG", quality=92)  # 64x48
    burst = cat.crop((120, 70, 184, 118))
    burst.filter(ImageFilter.GaussianBlur(2.5)).save(d / "burst1.jpg", format="JPEG", quality=92)
    burst.save(d / "burst2.jpg", format="JPEG", quality=92)
    burst.filter(ImageFilter.GaussianBlur(1.5)).save(d / "burst3.jpg", format="JPEG", quality=92)
    (d / "notes.txt").write_text("these are not the pixels you are looking for\n")
    # Noise does not compress: a PNG over MAX_UPLOAD_BYTES.
    Image.frombytes("RGB", (400, 300), os.urandom(400 * 300 * 3)).save(d / "big.png", format="PNG")
    for name in ("face.png", "ear.jpg", "burst1.jpg", "burst2.jpg", "burst3.jpg", "notes.txt", "big.png"):
        paths[name] = str(d / name)
    assert os.path.getsize(paths["big.png"]) > MAX_UPLOAD_BYTES
    return paths


@pytest.fixture(autouse=True)
def drain_logs(browser):
    """Keeps every request and console entry each test caused, for the last test to judge."""
    yield
    browser.drain()


# ---------------------------------------------------------------- helpers

def api_token(server, username, password):
    r = requests.post(server + "/token", data={"username": username, "password": password}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def bearer(token):
    return {"Authorization": "Bearer " + token}


def visible(browser, element_id, timeout=WAIT_S):
    return browser.wait(EC.visibility_of_element_located((By.ID, element_id)), timeout)


def text_of(browser, element_id):
    return browser.driver.find_element(By.ID, element_id).text


def wait_text(browser, element_id, pattern, timeout=WAIT_S):
    """Waits until the element's text matches the regex; fails saying what it showed."""
    found = browser.wait_quietly(lambda _: re.search(pattern, text_of(browser, element_id)), timeout)
    if not found:
        pytest.fail(f"#{element_id} never matched {pattern!r}; it shows: {text_of(browser, element_id)!r}")
    return found


def click(el):
    """Clicks el in the middle of the screen (chromedriver clicks where it is, under the sticky header too)."""
    el.parent.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'nearest'})", el)
    el.click()


def fill(browser, element_id, value):
    el = browser.driver.find_element(By.ID, element_id)
    el.clear()
    el.send_keys(value)


def open_app(browser, server):
    browser.driver.get(server + "/")
    browser.wait(lambda d: d.execute_script(
        "return !document.getElementById('auth-view').hidden || !document.getElementById('gallery-view').hidden"))


def sign_in(browser, server, user):
    """Through the sign-in form (registering through the API first if no test has registered this user);
    signs another user out first."""
    d = browser.driver
    if "/" != urllib.parse.urlsplit(d.current_url).path or not d.current_url.startswith(server):
        open_app(browser, server)
    signed_in_as = d.execute_script("return sessionStorage.getItem('petcam.username')")
    if signed_in_as and signed_in_as != user[0] and d.find_element(By.ID, "nav").is_displayed():
        click(d.find_element(By.ID, "sign-out"))
    if not d.find_element(By.ID, "gallery-view").is_displayed():
        requests.post(server + "/register", json={"username": user[0], "password": user[1]}, timeout=10)
        visible(browser, "auth-view")
        click(d.find_element(By.ID, "tab-signin"))
        fill(browser, "signin-username", user[0])
        fill(browser, "signin-password", user[1])
        click(d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]"))
    visible(browser, "gallery-view")


def stored_token(browser):
    return browser.driver.execute_script("return sessionStorage.getItem('petcam.token')")


def cards(browser):
    """{photo id: status} of the gallery's cards, in page order."""
    return browser.driver.execute_script(
        "return [...document.querySelectorAll('#grid li.photo')].map(li => [li.dataset.id, li.dataset.status])")


def choose_files(browser, *paths):
    browser.driver.find_element(By.ID, "file-input").send_keys("\n".join(paths))


def upload_items(browser):
    return browser.driver.execute_script("""
        return [...document.querySelectorAll('#uploads li')].map(li => ({
          state: li.dataset.state, id: li.dataset.photoId || null, text: li.innerText,
          progressEvents: Number(li.dataset.progressEvents || 0)}))""")


def wait_uploads_settled(browser, count):
    def settled(_):
        items = upload_items(browser)
        return len(items) >= count and all(i["state"] in ("done", "failed") for i in items[:count]) and items
    items = browser.wait_quietly(settled)
    assert items, f"uploads did not finish: {upload_items(browser)}"
    return items[:count]


def clear_uploads(browser):
    browser.driver.execute_script("document.getElementById('uploads').replaceChildren()")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def signed_token(claims):
    """An HS256 token signed with the server's SECRET_KEY, as the server issues them."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(SECRET_KEY.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def route_exists(server, token, method, path):
    return requests.request(method, server + path, headers=bearer(token), timeout=10, stream=True).status_code != 404


def app_module_url(browser, name):
    """The URL of one of the page's modules, in the version the page loaded."""
    src = browser.driver.execute_script("return document.querySelector('script[type=module]').src")
    return src.rsplit("/", 1)[0] + "/" + name


def emulate(browser, width, height, mobile):
    browser.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def screenshot(browser, name):
    out = os.environ.get("PETCAM_SCREENSHOTS")
    target = os.path.join(REPO_ROOT, out) if out and not os.path.isabs(out) else out
    if not target:
        return
    os.makedirs(target, exist_ok=True)
    png = browser.driver.get_screenshot_as_png()
    # Palette PNGs keep the committed files small.
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        os.path.join(target, name), format="PNG", optimize=True)


# ---------------------------------------------------------------- the page and its headers

def test_page_and_assets_carry_their_headers(server):
    page = requests.get(server + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert directives["default-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-cache"
    # No inline script or style: every script has a src, no <style>, no style= attributes, no on*= handlers.
    html = page.text
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html)), html
    assert "<style" not in html and not re.search(r"\sstyle=", html) and not re.search(r"\son[a-z]+=", html)

    assets = re.findall(r'(?:src|href)="(/app/[^"]+)"', html)
    assert any(a.endswith("/main.js") for a in assets) and any(a.endswith("/style.css") for a in assets), assets
    version = assets[0].split("/")[2]
    for path in set(assets) | {f"/app/{version}/{m}.js" for m in ("api", "sse", "gallery", "viewer", "upload",
                                                                  "account", "dom")}:
        r = requests.get(server + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable", path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["ETag"].startswith('"')
        if path.endswith(".js"):
            assert r.headers["Content-Type"].startswith("text/javascript"), path
        # Unversioned: the same bytes, cached for an hour and revalidated by ETag.
        plain = requests.get(server + "/app/" + path.rsplit("/", 1)[1], timeout=10)
        assert plain.content == r.content and plain.headers["Cache-Control"] == "public, max-age=3600"
        again = requests.get(server + "/app/" + path.rsplit("/", 1)[1],
                             headers={"If-None-Match": plain.headers["ETag"]}, timeout=10)
        assert again.status_code == 304 and again.content == b""
    assert requests.get(server + "/app/0123456789ab/main.js", timeout=10).status_code == 404  # another build's
    assert requests.get(server + "/app/nothing.js", timeout=10).status_code == 404
    assert requests.post(server + "/", timeout=10).status_code == 405
    assert requests.get(server + "/?from=home#account", timeout=10).text == html  # a query string is still the page
    assert requests.get(server + "/", headers={"If-None-Match": page.headers["ETag"]}, timeout=10).status_code == 304


# ---------------------------------------------------------------- accounts: register, sign in, sign out

def test_register_shows_the_api_refusal_then_signs_in(server, browser, user):
    d = browser.driver
    open_app(browser, server)
    visible(browser, "auth-view")
    click(d.find_element(By.ID, "tab-register"))
    fill(browser, "register-username", "ab")
    fill(browser, "register-password", "12345")
    click(d.find_element(By.CSS_SELECTOR, "#register-form button[type=submit]"))
    browser.expected_refusals.append(("/register", 422))
    # The 422 list, one readable line per field, in the API's words.
    wait_text(browser, "register-errors", "Username: String should have at least 3 characters")
    assert "Password: String should have at least 6 characters" in text_of(browser, "register-errors")

    fill(browser, "register-username", user[0])
    fill(browser, "register-password", user[1])
    click(d.find_element(By.CSS_SELECTOR, "#register-form button[type=submit]"))
    visible(browser, "gallery-view")
    assert d.find_element(By.ID, "nav").is_displayed()
    token = stored_token(browser)
    assert token and requests.get(server + "/photos", headers=bearer(token), timeout=10).status_code == 200
    assert d.get_cookies() == []  # the token is never a cookie
    wait_text(browser, "empty", "No photos yet")

    # The same name again: the API's 400 as it words it.
    click(d.find_element(By.ID, "sign-out"))
    visible(browser, "auth-view")
    click(d.find_element(By.ID, "tab-register"))
    fill(browser, "register-username", user[0])
    fill(browser, "register-password", user[1])
    click(d.find_element(By.CSS_SELECTOR, "#register-form button[type=submit]"))
    browser.expected_refusals.append(("/register", 400))
    wait_text(browser, "register-errors", "^Username already registered$")


def test_sign_in_refusal_then_sign_in_and_out(server, browser, user):
    d = browser.driver
    open_app(browser, server)
    visible(browser, "auth-view")
    click(d.find_element(By.ID, "tab-signin"))
    fill(browser, "signin-username", user[0])
    fill(browser, "signin-password", "not-the-password")
    click(d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]"))
    browser.expected_refusals.append(("/token", 401))
    wait_text(browser, "signin-errors", "^Incorrect username or password$")
    assert stored_token(browser) is None

    fill(browser, "signin-password", user[1])
    click(d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]"))
    visible(browser, "gallery-view")
    assert stored_token(browser)
    # A reload keeps the session (sessionStorage), sign out ends it.
    d.refresh()
    visible(browser, "gallery-view")
    click(d.find_element(By.ID, "sign-out"))
    visible(browser, "auth-view")
    assert stored_token(browser) is None
    wait_text(browser, "notice", "You have signed out")
    sign_in(browser, server, user)


# ---------------------------------------------------------------- upload and the live gallery

def test_upload_photos_and_a_burst_then_watch_them_complete(server, browser, user, pictures):
    d = browser.driver
    sign_in(browser, server, user)
    clear_uploads(browser)
    # Record every status each card shows, however briefly.
    d.execute_script("""
        window.__seen = {};
        const note = li => (window.__seen[li.dataset.id] ||= []).push(
            li.dataset.status + ':' + (li.querySelector('progress').getAttribute('value') ?? ''));
        new MutationObserver(ms => ms.forEach(m => {
          if (m.type === 'attributes') note(m.target.closest('li.photo'));
          m.addedNodes.forEach(n => n.matches && n.matches('li.photo') && note(n));
        })).observe(document.getElementById('grid'),
                    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status', 'value']});""")

    # Two separate photos at 2x as PNG.
    choose_files(browser, pictures["face.png"], pictures["ear.jpg"])
    wait_text(browser, "upload-button", "Upload 2 photos")
    d.execute_script("const s = document.getElementById('outscale'); s.value = '2';"
                     "s.dispatchEvent(new Event('input'));")
    assert text_of(browser, "outscale-out") == "2×"
    click(d.find_element(By.CSS_SELECTOR, "#format option[value=png]"))
    click(d.find_element(By.ID, "upload-button"))
    items = wait_uploads_settled(browser, 2)
    assert [i["state"] for i in items] == ["done", "done"], items
    assert all(i["progressEvents"] > 0 for i in items), items  # XMLHttpRequest upload progress reached the page

    # A burst of three as one best cut, at the default 4x JPEG, with a location.
    clear_uploads(browser)
    click(d.find_element(By.CSS_SELECTOR, "#format option[value=jpeg]"))
    d.execute_script("const s = document.getElementById('outscale'); s.value = '4';"
                     "s.dispatchEvent(new Event('input'));")
    click(d.find_element(By.CSS_SELECTOR, "input[name=mode][value=bestcut]"))
    choose_files(browser, pictures["burst1.jpg"], pictures["burst2.jpg"], pictures["burst3.jpg"])
    wait_text(browser, "upload-button", "Upload 3 as one best cut")
    click(d.find_element(By.CSS_SELECTOR, "details.location summary"))
    fill(browser, "lat", "37.5665")
    fill(browser, "lng", "126.978")
    click(d.find_element(By.ID, "upload-button"))
    burst = wait_uploads_settled(browser, 1)[0]
    assert burst["state"] == "done", burst
    score = re.search(r"Best cut chosen \(sharpness score (\d+\.\d)\)", burst["text"])
    assert score, burst["text"]
    click(d.find_element(By.CSS_SELECTOR, "input[name=mode][value=separate]"))

    token = stored_token(browser)
    photos = requests.get(server + "/photos", headers=bearer(token), timeout=10).json()
    assert len(photos) == 3
    newest = photos[0]
    assert newest["id"] == burst["id"] and newest["outscale"] == 4 and newest["format"] == "jpeg"
    assert (newest["latitude"], newest["longitude"]) == (37.5665, 126.978)
    # The sharp shot of the burst became the photo's original, byte for byte.
    original = requests.get(server + f"/photos/{newest['id']}?type=original", headers=bearer(token), timeout=10)
    with open(pictures["burst2.jpg"], "rb") as f:
        assert original.content == f.read()
    assert {p["format"] for p in photos[1:]} == {"png"} and {p["outscale"] for p in photos[1:]} == {2}

    # Every card completes without a reload, newest first, each with its thumbnail from a blob: URL.
    ids = [p["id"] for p in photos]
    done = browser.wait_quietly(lambda _: [i for i, s in cards(browser) if s == "completed"] == ids, 90)
    assert done, f"cards: {cards(browser)}; statuses seen: {d.execute_script('return window.__seen')}"
    thumbs = d.execute_script("""
        return [...document.querySelectorAll('#grid li.photo img')].map(i => [i.src, i.naturalWidth, i.naturalHeight])""")
    assert all(src.startswith("blob:") and w > 0 for src, w, _ in thumbs), thumbs
    # Thumbnails: longest side 256, never larger than the original.
    assert sorted((w, h) for _, w, h in thumbs) == [(64, 48), (64, 48), (256, 192)], thumbs
    sizes = [li.text for li in d.find_elements(By.CSS_SELECTOR, "#grid li.photo .size")]
    assert sizes[0] == "64×48 → 256×192" and sorted(sizes[1:]) == ["320×240 → 640×480", "64×48 → 128×96"], sizes

    # Cards change without a reload (through events or polling): every card ends completed, and the ones
    # whose job had not finished when they appeared (at least the one queued behind the 320x240 photo) were
    # seen queued or processing first. A job may finish before its card appears, so not every card is.
    seen = d.execute_script("return window.__seen")
    states = {i: [s.split(":")[0] for s in seen.get(i, [])] for i in ids}
    assert all(s and s[-1] == "completed" for s in states.values()), states
    assert any({"queued", "processing"} & set(s) for s in states.values()), states


def test_live_events_bring_changes_from_elsewhere(server, browser, user, pictures):
    """GET /events: a photo uploaded and deleted from another device appears, completes and goes, live."""
    d = browser.driver
    sign_in(browser, server, user)
    token = stored_token(browser)
    if not route_exists(server, token, "GET", "/events"):
        browser.expected_refusals.append(("/events", 404))
        # The page copes: it says it polls instead.
        wait_text(browser, "live", "Updating every few seconds")
        pytest.skip("GET /events answers 404 on this server (the jobs-and-accounts issue is not merged): "
                    "the page polls instead, which the upload test covered")
    wait_text(browser, "live", "^Live$")
    d.execute_script("""
        window.__progress = [];
        new MutationObserver(ms => ms.forEach(m => m.target.matches('progress') &&
            window.__progress.push(m.target.getAttribute('value')))).observe(
            document.getElementById('grid'), {subtree: true, attributes: true, attributeFilter: ['value']});""")
    with open(pictures["ear.jpg"], "rb") as f:
        r = requests.post(server + "/upscale", headers=bearer(token), files={"file": ("ear.jpg", f, "image/jpeg")},
                          timeout=30)
    assert r.status_code == 200, r.text
    photo_id = r.json()["id"]
    assert browser.wait_quietly(lambda _: dict(cards(browser)).get(photo_id) == "completed", 90), cards(browser)
    assert cards(browser)[0][0] == photo_id  # newest first
    # The bar only rises, and ends full (a one-second job may skip the values between).
    progress = [float(v) for v in d.execute_script("return window.__progress") if v is not None]
    assert progress and progress == sorted(progress) and progress[-1] == 1.0, progress
    r = requests.delete(server + f"/photos/{photo_id}", headers=bearer(token), timeout=10)
    assert r.status_code == 200
    assert browser.wait_quietly(lambda _: photo_id not in dict(cards(browser)), 30), cards(browser)


def test_viewer_compares_with_the_keyboard_zooms_and_downloads(server, browser, user):
    d = browser.driver
    sign_in(browser, server, user)
    token = stored_token(browser)
    photos = requests.get(server + "/photos", headers=bearer(token), timeout=10).json()
    target = next(p for p in photos if p["format"] == "png")  # a 2x PNG: of the 320x240 or the 64x48 crop
    browser.wait(lambda _: dict(cards(browser)).get(target["id"]) == "completed")
    click(d.find_element(By.CSS_SELECTOR, f"li.photo[data-id='{target['id']}'] button.thumb"))
    visible(browser, "viewer")

    # Both pictures loaded (the original and the preview), through blob: URLs.
    loaded = """const b = document.getElementById('img-before'), a = document.getElementById('img-after');
        return b.src.startsWith('blob:') && a.src.startsWith('blob:') && b.complete && a.complete &&
               b.naturalWidth > 0 && a.naturalWidth > 0 ? [b.naturalWidth, a.naturalWidth] : null;"""
    widths = browser.wait(lambda _: d.execute_script(loaded))
    assert widths == [target["width"], target["upscaled_width"]], widths
    # The same region at the same display size; the original scaled up without smoothing.
    rects = d.execute_script("""return ['img-before', 'img-after'].map(id => {
        const r = document.getElementById(id).getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })""")
    assert rects[0] == rects[1] and rects[0][2] > 200, rects
    assert d.execute_script("return getComputedStyle(document.getElementById('img-before')).imageRendering") == \
        "pixelated"

    # The slider has the focus and moves with the arrow keys; the original's part follows it.
    slider = d.find_element(By.ID, "compare-slider")
    assert d.switch_to.active_element == slider
    assert slider.accessible_name == "Before / after"
    for _ in range(5):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert slider.get_attribute("value") == "55"
    assert slider.get_attribute("aria-valuetext") == "55% original, 45% result"
    clip = d.execute_script("return getComputedStyle(document.getElementById('img-before')).clipPath")
    assert "45%" in clip, clip
    slider.send_keys(Keys.HOME)
    assert slider.get_attribute("value") == "0"
    slider.send_keys(Keys.END)
    assert slider.get_attribute("value") == "100"
    for _ in range(3):
        slider.send_keys(Keys.ARROW_LEFT)
    assert slider.get_attribute("value") == "97"
    assert d.execute_script("return getComputedStyle(document.getElementById('divider')).left") != "0px"

    # Zoom to 100%: one pixel of the full result per CSS pixel.
    click(d.find_element(By.ID, "zoom"))
    full = """const a = document.getElementById('img-after');
        return a.complete && a.naturalWidth === arguments[0] ? a.getBoundingClientRect().width : null;"""
    width = browser.wait(lambda _: d.execute_script(full, target["upscaled_width"]))
    assert width == target["upscaled_width"]
    assert d.find_element(By.ID, "zoom").get_attribute("aria-pressed") == "true"
    wait_text(browser, "viewer-status", "100%")
    click(d.find_element(By.ID, "zoom"))
    assert d.find_element(By.ID, "zoom").get_attribute("aria-pressed") == "false"

    # Downloads: files with the server's bytes.
    for button, kind, name in (("download-original", "original", "original"),
                               ("download-result", "upscaled", "2x.png"),
                               ("download-preview", "preview", "preview.jpg")):
        click(d.find_element(By.ID, button))
        expected = requests.get(server + f"/photos/{target['id']}?type={kind}", headers=bearer(token), timeout=10)
        want = f"petcam-{target['id'][:8]}-{name}"

        def saved(_):
            done = [f for f in os.listdir(browser.downloads) if f.startswith(want) and not f.endswith(".crdownload")]
            return done and os.path.getsize(os.path.join(browser.downloads, done[0])) == len(expected.content) \
                and done[0]
        got = browser.wait_quietly(saved)
        assert got, f"no download {want}* in {os.listdir(browser.downloads)}"
        with open(os.path.join(browser.downloads, got), "rb") as f:
            assert f.read() == expected.content, got
    assert any(f.endswith(".png") and "original" in f for f in os.listdir(browser.downloads)) or \
        any(f.endswith(".jpg") and "original" in f for f in os.listdir(browser.downloads))

    # Escape closes the viewer.
    d.find_element(By.ID, "compare-slider").send_keys(Keys.ESCAPE)
    browser.wait(EC.invisibility_of_element_located((By.ID, "viewer")))


def test_delete_asks_first(server, browser, user):
    d = browser.driver
    sign_in(browser, server, user)
    token = stored_token(browser)
    before = [i for i, _ in cards(browser)]
    victim = before[-1]
    click(d.find_element(By.CSS_SELECTOR, f"li.photo[data-id='{victim}'] button.thumb"))
    visible(browser, "viewer")
    click(d.find_element(By.ID, "delete-photo"))
    visible(browser, "confirm")
    assert "cannot be undone" in text_of(browser, "confirm-text")
    click(d.find_element(By.ID, "confirm-cancel"))
    browser.wait(EC.invisibility_of_element_located((By.ID, "confirm")))
    assert requests.get(server + f"/photos/{victim}/info", headers=bearer(token), timeout=10).status_code == 200

    click(d.find_element(By.ID, "delete-photo"))
    visible(browser, "confirm")
    click(d.find_element(By.ID, "confirm-ok"))
    browser.wait(EC.invisibility_of_element_located((By.ID, "viewer")))
    wait_text(browser, "notice", "Photo deleted")
    assert [i for i, _ in cards(browser)] == before[:-1]
    assert requests.get(server + f"/photos/{victim}/info", headers=bearer(token), timeout=10).status_code == 404


def test_refused_uploads_say_why(server, browser, user, pictures):
    d = browser.driver
    sign_in(browser, server, user)
    token = stored_token(browser)
    clear_uploads(browser)

    # 400: not an image, with the API's own detail.
    with open(pictures["notes.txt"], "rb") as f:
        detail_400 = requests.post(server + "/upscale", headers=bearer(token),
                                   files={"file": ("notes.txt", f, "text/plain")}, timeout=10).json()["detail"]
    choose_files(browser, pictures["notes.txt"])
    click(d.find_element(By.ID, "upload-button"))
    browser.expected_refusals.append(("/upscale", 400))
    item = wait_uploads_settled(browser, 1)[0]
    assert item["state"] == "failed" and detail_400 in item["text"], (detail_400, item)
    assert "JPEG" in detail_400  # the detail lists the accepted types

    # 413: over MAX_UPLOAD_BYTES, with the limit in bytes.
    clear_uploads(browser)
    choose_files(browser, pictures["big.png"])
    click(d.find_element(By.ID, "upload-button"))
    browser.expected_refusals.append(("/upscale", 413))
    item = wait_uploads_settled(browser, 1)[0]
    assert item["state"] == "failed", item
    assert re.search(rf"is too large: \d+ bytes; the limit is {MAX_UPLOAD_BYTES} bytes per file", item["text"]), item

    # 429: best cuts are limited to BESTCUT_LIMIT a minute; use up what is left, then the page says how long to wait.
    for _ in range(BESTCUT_LIMIT):
        requests.post(server + "/bestcut", headers=bearer(token), timeout=10)
    clear_uploads(browser)
    click(d.find_element(By.CSS_SELECTOR, "input[name=mode][value=bestcut]"))
    choose_files(browser, pictures["burst1.jpg"], pictures["burst2.jpg"])
    click(d.find_element(By.ID, "upload-button"))
    browser.expected_refusals.append(("/bestcut", 429))
    item = wait_uploads_settled(browser, 1)[0]
    click(d.find_element(By.CSS_SELECTOR, "input[name=mode][value=separate]"))
    assert item["state"] == "failed", item
    assert re.search(r"Too many requests \(Rate limit exceeded: 3 per 1 minute\)\. Try again in \d+ seconds?\.",
                     item["text"]), item
    # Nothing was stored by any of them.
    assert len(requests.get(server + "/photos", headers=bearer(token), timeout=10).json()) == len(cards(browser))
    # A rate-limited upload offers Retry; after the wait it says, the retry goes through.
    retry = d.find_element(By.CSS_SELECTOR, "#uploads li button:not([hidden])")
    assert retry.text == "Retry"
    time.sleep(int(re.search(r"Try again in (\d+) second", item["text"]).group(1)) + 0.5)
    count = len(cards(browser))
    click(retry)
    item = wait_uploads_settled(browser, 1)[0]
    assert item["state"] == "done" and "Best cut chosen" in item["text"], item
    browser.wait(lambda _: len(cards(browser)) == count + 1)


def test_a_retried_upload_is_answered_not_stored_twice(server, browser, user):
    """The page's upload() with one Idempotency-Key and one body, sent twice: one photo, the same answer."""
    d = browser.driver
    sign_in(browser, server, user)
    token = stored_token(browser)
    before = len(requests.get(server + "/photos", headers=bearer(token), timeout=10).json())
    result = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import(arguments[0]).then(async (api) => {
          const canvas = document.createElement('canvas');
          canvas.width = 24; canvas.height = 18;
          const g = canvas.getContext('2d');
          g.fillStyle = '#c84'; g.fillRect(0, 0, 24, 18); g.fillStyle = '#248'; g.fillRect(6, 4, 10, 8);
          const blob = await new Promise(r => canvas.toBlob(r, 'image/png'));
          const form = api.multipart([['file', new File([blob], 'dot.png', {type: 'image/png'})], ['outscale', '2']]);
          const key = api.newKey();
          const first = await api.upload('/upscale', form, {key});
          const second = await api.upload('/upscale', form, {key});
          done({first, second, key});
        }).catch(e => done({error: String(e && (e.message || e))}));""", app_module_url(browser, "api.js"))
    assert "error" not in result, result
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", result["key"])
    assert result["first"]["id"] == result["second"]["id"], result
    photos = requests.get(server + "/photos", headers=bearer(token), timeout=10).json()
    assert len(photos) == before + 1
    # It shows up in the gallery once, live.
    browser.wait(lambda _: [i for i, _ in cards(browser)].count(result["first"]["id"]) == 1)


def test_error_wording_and_event_parsing_in_the_page(server, browser, user):
    """The page's own modules: each refusal in plain words, and the SSE parser on awkward chunking."""
    d = browser.driver
    sign_in(browser, server, user)
    result = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([import(arguments[0]), import(arguments[1])]).then(([api, sse]) => {
          const words = [
            api.describe(503, "Server busy, retry shortly", 1),
            api.describe(429, "Rate limit exceeded: 10 per 1 minute", 6),
            api.describe(413, "Request body too large: the limit is 100 bytes (MAX_REQUEST_BYTES)", null),
            api.describe(422, [{loc: ["body", "outscale"], msg: "Input should be less than or equal to 4"},
                               {loc: ["body", "new_password"], msg: "String should have at least 6 characters"}]),
            api.describe(0, null),
            api.describe(500, "Internal Server Error"),
          ];
          const p = new sse.SseParser();
          const text = ': keep-alive\\r\\n\\r\\nevent: photo\\r\\nid: 7\\r\\ndata: {"id":"a",\\r\\ndata: "status":"queued"}\\r\\n\\r\\n' +
                       'event: deleted\\ndata:{"id":"b"}\\n\\nretry: 5000\\rdata: plain\\r\\r: ping\\n';
          const events = [];
          for (let i = 0; i < text.length; i += 3) events.push(...p.push(text.slice(i, i + 3)));
          done({words, events, retry: p.retry, last: p.lastEventId});
        }).catch(e => done({error: String(e)}));""", app_module_url(browser, "api.js"), app_module_url(browser, "sse.js"))
    assert "error" not in result, result
    assert result["words"] == [
        ["The server is busy (Server busy, retry shortly). Try again in 1 second."],
        ["Too many requests (Rate limit exceeded: 10 per 1 minute). Try again in 6 seconds."],
        ["Request body too large: the limit is 100 bytes (MAX_REQUEST_BYTES)"],
        ["Outscale: Input should be less than or equal to 4", "New password: String should have at least 6 characters"],
        ["Could not reach the server. Check your connection and try again."],
        ["Something went wrong on the server."],
    ]
    assert result["events"] == [
        {"type": "photo", "data": '{"id":"a",\n"status":"queued"}', "id": "7"},
        {"type": "deleted", "data": '{"id":"b"}', "id": "7"},
        {"type": "message", "data": "plain", "id": "7"},
    ]
    assert result["retry"] == 5000 and result["last"] == "7"


# ---------------------------------------------------------------- tokens that stop working

def test_expiring_token_returns_to_sign_in(server, browser, user):
    """A real token signed with the server's key that expires in 4 s: the page signs out at its `exp`,
    and the server refuses it after that too."""
    d = browser.driver
    sign_in(browser, server, user)
    claims = claims_of(stored_token(browser))  # sub, and the account's token version if the server has one
    now = int(time.time())
    short = signed_token({**claims, "iat": now, "exp": now + 4})
    assert requests.get(server + "/photos", headers=bearer(short), timeout=10).status_code == 200
    d.execute_script("sessionStorage.setItem('petcam.token', arguments[0])", short)
    d.refresh()
    visible(browser, "gallery-view")
    browser.wait(lambda _: cards(browser))  # the gallery loaded with the short-lived token
    visible(browser, "auth-view", timeout=15)
    wait_text(browser, "notice", "Your session has expired. Please sign in again.")
    assert stored_token(browser) is None
    assert not d.find_element(By.ID, "grid").find_elements(By.CSS_SELECTOR, "li")  # nothing of the session left
    assert requests.get(server + "/photos", headers=bearer(short), timeout=10).status_code == 401


def test_refused_token_returns_to_sign_in(server, browser, user):
    """A token the server answers 401 (its signature altered): the first call's 401 signs out cleanly."""
    d = browser.driver
    sign_in(browser, server, user)
    head, body, sig = stored_token(browser).split(".")
    forged = f"{head}.{body}.{sig[:10]}{'A' if sig[10] != 'A' else 'B'}{sig[11:]}"
    d.execute_script("sessionStorage.setItem('petcam.token', arguments[0])", forged)
    browser.expected_refusals.append(("/photos", 401))
    browser.expected_refusals.append(("/events", 401))
    d.refresh()
    visible(browser, "auth-view")
    wait_text(browser, "notice", "Your session has ended. Please sign in again.")
    assert stored_token(browser) is None
    sign_in(browser, server, user)


# ---------------------------------------------------------------- phone and desktop, accessibility

def accessible_name_problems(browser):
    """Controls (buttons, links, fields, sliders, ...) that Chromium's accessibility tree gives no name."""
    tree = browser.driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    roles = {"button", "link", "textbox", "slider", "combobox", "radio", "checkbox", "tab", "spinbutton",
             "searchbox", "listbox"}
    bad = []
    for node in tree:
        if node.get("ignored"):
            continue
        role = node.get("role", {}).get("value")
        if role in roles and not (node.get("name", {}).get("value") or "").strip():
            bad.append(role)
    return bad


def test_phone_and_desktop_layouts_with_named_controls(server, browser, user, tmp_path):
    d = browser.driver
    sign_in(browser, server, user)
    # A few more photos (through the API, as from another device), so the gallery looks lived in.
    token = stored_token(browser)
    for name, box in (("coffee", (180, 60, 276, 132)), ("astronaut", (170, 40, 266, 112)),
                      ("chelsea", (300, 100, 396, 172))):
        path = tmp_path / f"{name}.jpg"
        photo(name).crop(box).save(path, format="JPEG", quality=92)
        with open(path, "rb") as f:
            r = requests.post(server + "/upscale", headers=bearer(token), files={"file": (path.name, f, "image/jpeg")},
                              data={"outscale": "3"}, timeout=30)
        assert r.status_code == 200, r.text
    d.refresh()
    visible(browser, "gallery-view")
    ready = browser.wait_quietly(lambda _: all(s == "completed" for _, s in cards(browser)) and len(cards(browser)) >= 5, 90)
    assert ready, f"cards: {cards(browser)}"
    # Thumbnails load as their cards come into view.
    thumbs_in_view = """return [...document.querySelectorAll('#grid img')]
        .filter(i => i.getBoundingClientRect().top < innerHeight)
        .every(i => i.complete && i.naturalWidth > 0)"""
    try:
        for width, height, mobile, tag in ((1280, 800, False, "desktop"), (390, 844, True, "phone")):
            emulate(browser, width, height, mobile)
            d.get(server + "/#gallery")
            visible(browser, "gallery-view")
            browser.wait(lambda _: len(cards(browser)) >= 5)
            # Nothing wider than the screen.
            assert d.execute_script("return document.documentElement.scrollWidth") <= width, tag
            assert accessible_name_problems(browser) == [], tag
            if mobile:  # the upload panel fills a phone's first screen: show the photos below it
                d.execute_script("document.getElementById('gallery-title').scrollIntoView()")
            browser.wait(lambda _: d.execute_script(thumbs_in_view))
            screenshot(browser, f"gallery-{tag}.png")

            first = cards(browser)[0][0]
            click(d.find_element(By.CSS_SELECTOR, f"li.photo[data-id='{first}'] button.thumb"))
            visible(browser, "viewer")
            browser.wait(lambda _: d.execute_script(
                "const a = document.getElementById('img-after'); return a.complete && a.naturalWidth > 0"))
            slider = d.find_element(By.ID, "compare-slider")
            for _ in range(15):
                slider.send_keys(Keys.ARROW_LEFT)
            rect = d.execute_script("const r = document.getElementById('viewer').getBoundingClientRect();"
                                    "return [r.left, r.right]")
            assert rect[0] >= 0 and rect[1] <= width, (tag, rect)
            assert accessible_name_problems(browser) == [], tag
            screenshot(browser, f"viewer-{tag}.png")
            # Focus is visible on a control reached with the keyboard.
            slider.send_keys(Keys.TAB)
            outline = d.execute_script("const s = getComputedStyle(document.activeElement);"
                                       "return [s.outlineStyle, s.outlineWidth]")
            assert outline[0] != "none" and outline[1] != "0px", (tag, outline)
            click(d.find_element(By.ID, "viewer-close"))
            browser.wait(EC.invisibility_of_element_located((By.ID, "viewer")))

        click(d.find_element(By.ID, "sign-out"))
        visible(browser, "auth-view")
        assert d.execute_script("return document.documentElement.scrollWidth") <= 390
        assert accessible_name_problems(browser) == []
        screenshot(browser, "sign-in-phone.png")
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    sign_in(browser, server, user)


def test_the_gallery_pages_as_it_grows(server, browser, tmp_path):
    """GET /photos 24 at a time: the rest comes on scrolling down (or the Load more button), each photo once."""
    d = browser.driver
    pager = ("pager_" + uuid.uuid4().hex[:10], "pages-" + uuid.uuid4().hex[:6])
    requests.post(server + "/register", json={"username": pager[0], "password": pager[1]}, timeout=10)
    token = api_token(server, *pager)
    path = tmp_path / "tiny.png"
    photo("coffee").resize((16, 12)).save(path, format="PNG")
    for _ in range(30):
        with open(path, "rb") as f:
            r = requests.post(server + "/upscale", headers=bearer(token), files={"file": ("tiny.png", f, "image/png")},
                              data={"outscale": "1.5"}, timeout=30)
        assert r.status_code == 200, r.text
    expected = [p["id"] for p in requests.get(server + "/photos", headers=bearer(token), timeout=10).json()]
    assert len(expected) == 30

    if d.find_element(By.ID, "nav").is_displayed():
        click(d.find_element(By.ID, "sign-out"))
    emulate(browser, 1280, 800, False)  # a known screen: 24 cards do not fit on it
    try:
        sign_in(browser, server, pager)
        browser.wait(lambda _: len(cards(browser)) == 24)
        assert d.find_element(By.ID, "load-more").is_displayed()
        d.execute_script("document.getElementById('sentinel').scrollIntoView()")
        browser.wait(lambda _: len(cards(browser)) == 30)
        assert [i for i, _ in cards(browser)] == expected  # newest first, none twice
        browser.wait(EC.invisibility_of_element_located((By.ID, "load-more")))
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    click(d.find_element(By.ID, "sign-out"))
    visible(browser, "auth-view")


# ---------------------------------------------------------------- the account page

def test_account_shows_me_and_changes_the_password(server, browser, user):
    d = browser.driver
    sign_in(browser, server, user)
    token = stored_token(browser)
    if not route_exists(server, token, "GET", "/users/me"):
        pytest.skip("GET /users/me answers 404 on this server (the jobs-and-accounts issue is not merged)")
    click(d.find_element(By.ID, "nav-account"))
    visible(browser, "account-view")
    count = len(requests.get(server + "/photos", headers=bearer(token), timeout=10).json())
    browser.wait(lambda _: d.find_elements(By.CSS_SELECTOR, "#account-info dd[data-field=photos]"))
    assert d.find_element(By.CSS_SELECTOR, "#account-info dd[data-field=username]").text == user[0]
    assert d.find_element(By.CSS_SELECTOR, "#account-info dd[data-field=photos]").text == str(count)

    fill(browser, "current-password", "wrong-password")
    fill(browser, "new-password", "new-" + user[1])
    click(d.find_element(By.CSS_SELECTOR, "#password-form button[type=submit]"))
    browser.expected_refusals.append(("/users/me/password", 400))
    wait_text(browser, "password-errors", "^Incorrect password$")

    fill(browser, "current-password", user[1])
    fill(browser, "new-password", "new-" + user[1])
    click(d.find_element(By.CSS_SELECTOR, "#password-form button[type=submit]"))
    wait_text(browser, "password-ok", "Password changed")
    # The old token no longer works, the page holds a new one, and the new password is the one that signs in.
    assert requests.get(server + "/photos", headers=bearer(token), timeout=10).status_code == 401
    assert stored_token(browser) != token
    assert requests.get(server + "/photos", headers=bearer(stored_token(browser)), timeout=10).status_code == 200
    assert requests.post(server + "/token", data={"username": user[0], "password": user[1]},
                         timeout=10).status_code == 401
    api_token(server, user[0], "new-" + user[1])
    click(d.find_element(By.ID, "nav-gallery"))
    visible(browser, "gallery-view")
    browser.wait(lambda _: cards(browser))


def test_delete_account_asks_then_signs_out(server, browser):
    d = browser.driver
    other = ("gone_" + uuid.uuid4().hex[:10], "farewell-" + uuid.uuid4().hex[:6])
    requests.post(server + "/register", json={"username": other[0], "password": other[1]}, timeout=10)
    token = api_token(server, *other)
    if not route_exists(server, token, "GET", "/users/me"):
        pytest.skip("GET /users/me answers 404 on this server (the jobs-and-accounts issue is not merged)")
    if d.find_element(By.ID, "nav").is_displayed():
        click(d.find_element(By.ID, "sign-out"))
    sign_in(browser, server, other)
    d.get(server + "/#account")
    visible(browser, "account-view")

    fill(browser, "delete-password", "wrong-password")
    click(d.find_element(By.CSS_SELECTOR, "#delete-account-form button[type=submit]"))
    visible(browser, "confirm")
    click(d.find_element(By.ID, "confirm-ok"))
    browser.expected_refusals.append(("/users/me", 400))
    wait_text(browser, "delete-account-errors", "^Incorrect password$")

    fill(browser, "delete-password", other[1])
    click(d.find_element(By.CSS_SELECTOR, "#delete-account-form button[type=submit]"))
    visible(browser, "confirm")
    assert other[0] in text_of(browser, "confirm-text")
    click(d.find_element(By.ID, "confirm-cancel"))
    assert requests.get(server + "/users/me", headers=bearer(token), timeout=10).status_code == 200

    click(d.find_element(By.CSS_SELECTOR, "#delete-account-form button[type=submit]"))
    visible(browser, "confirm")
    click(d.find_element(By.ID, "confirm-ok"))
    visible(browser, "auth-view")
    wait_text(browser, "notice", "Your account and its photos have been deleted")
    assert stored_token(browser) is None
    assert requests.post(server + "/token", data={"username": other[0], "password": other[1]},
                         timeout=10).status_code == 401


# ---------------------------------------------------------------- offline and clean

def test_the_page_loads_nothing_from_other_hosts_and_logs_no_errors(server, browser):
    browser.drain()
    assert any(urllib.parse.urlsplit(u).path.endswith("/main.js") for u in browser.requests), browser.requests
    local_schemes = ("data", "blob", "about", "chrome", "chrome-untrusted", "devtools")
    foreign = [u for u in browser.requests
               if urllib.parse.urlsplit(u).scheme not in local_schemes and urllib.parse.urlsplit(u).hostname != HOST]
    assert not foreign, f"the page reached beyond {HOST}: {sorted(set(foreign))}"

    # The browser logs every refused request as an error; the ones the tests provoked are expected. Anything
    # else (a script error, a CSP violation, another failed request) is not.
    def expected(entry):
        m = re.match(r"(\S+) - Failed to load resource: the server responded with a status of (\d+)",
                     entry.get("message", ""))
        return entry.get("source") == "network" and m and \
            (urllib.parse.urlsplit(m.group(1)).path, int(m.group(2))) in browser.expected_refusals
    severe = [e for e in browser.console if e.get("level") == "SEVERE" and not expected(e)]
    assert not severe, "console errors:\n" + "\n".join(e["message"] for e in severe)
