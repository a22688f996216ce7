"""What the browser tests share: the real server on a free port, and headless Chromium that records every request
and console entry. Each test module gets its own server (module scope); a module may override `server_env` to
start it with other settings."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60
WAIT_S = 30  # for anything the browser renders


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(extra_env=None):
    """The real `petcam serve` on a free loopback port, in a temp dir; yields its base URL."""
    binary = os.path.abspath(os.environ.get("PETCAM_BIN", os.path.join(REPO_ROOT, "build", "release", "petcam")))
    assert os.access(binary, os.X_OK), f"no server binary at {binary} (set PETCAM_BIN)"
    vendor = os.path.join(REPO_ROOT, "web", "vendor")
    assert os.path.isfile(os.path.join(vendor, "swagger-ui", "swagger-ui-bundle.js")) and os.path.isfile(
        os.path.join(vendor, "redoc", "redoc.standalone.js")), "web/vendor/ is missing: run scripts/fetch-web-assets.sh"

    tmp = tempfile.mkdtemp(prefix="petcam-browser-")
    port = free_port()
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.pop("STORAGE_DIR", None)
    env.update(HOST=HOST, PORT=str(port), DATA_DIR=os.path.join(tmp, "data"), SECRET_KEY="test",
               PETCAM_MODELS_DIR=os.path.join(REPO_ROOT, "models"), WEB_DIR=os.path.join(REPO_ROOT, "web"))
    env.update(extra_env or {})
    log_path = os.path.join(tmp, "server.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([binary, "serve"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{port}"

    def server_log():
        with open(log_path, "rb") as f:
            return f.read().decode(errors="replace")[-8000:]

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{server_log()}"
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"no 200 from /health in {START_TIMEOUT_S} s:\n{server_log()}"
            time.sleep(0.2)
        yield base
    finally:
        # A server that exited on its own (a crash, a sanitizer report) fails the module with its log.
        died = None if proc.poll() is None else f"server exited with {proc.returncode} during the tests:\n{server_log()}"
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if died:
        raise AssertionError(died)


@pytest.fixture(scope="module")
def server_env():
    """Settings for this module's server, over the defaults above."""
    return {}


@pytest.fixture(scope="module")
def server(server_env):
    with running_server(server_env) as base:
        yield base


class Browser:
    """Headless Chromium that keeps every network request and console entry it has seen; downloads land in
    self.downloads."""

    def __init__(self, width=1400, height=1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="petcam-chromium-")
        self.downloads = tempfile.mkdtemp(prefix="petcam-downloads-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", f"--window-size={width},{height}", f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        options.add_experimental_option("prefs", {"download.default_directory": self.downloads,
                                                  "download.prompt_for_download": False})
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": self.downloads})
        self.requests = []  # every URL the pages asked for
        self.console = []   # every console entry

    def drain(self):
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            elif message["method"] == "Network.webSocketCreated":
                self.requests.append(message["params"]["url"])
        self.console.extend(self.driver.get_log("browser"))

    def wait(self, condition, timeout=WAIT_S):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # Pages re-render as they load: an element found a moment ago may be gone.
        return WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)

    def wait_quietly(self, condition, timeout=WAIT_S):
        """Like wait(), but a timeout gives None, for tests that explain the failure themselves."""
        from selenium.common.exceptions import TimeoutException

        try:
            return self.wait(condition, timeout)
        except TimeoutException:
            return None

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
            shutil.rmtree(self.downloads, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    try:
        yield b
    finally:
        b.close()
