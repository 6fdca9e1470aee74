"""A real JupyterLab in a real browser: the fixtures behind ``tests/browser/``.

``jupyterlab`` starts ``jupyter lab`` from this environment on a free local port, with a token, on a
temporary copy of the lessons it is asked for and with temporary settings, so neither the committed
notebooks nor the user's own JupyterLab settings are touched. ``lab_page`` drives it with headless
Chromium through Playwright, pointed at the system's Chromium (Debian's ``chromium`` package): no
browser is downloaded. Without Chromium the tests skip and say how to install it; once Chromium is
found, every failure fails.

Screenshots and the JupyterLab log go to ``build/test-artifacts/browser/`` (git-ignored); the test
summary names the folder.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts" / "browser"
BROWSER_ENV = "CROSSMODAL_EDU_CHROMIUM"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("install it with `sudo apt-get install --no-install-recommends chromium` (Debian/Ubuntu; "
                f"CI's .ci/run does this), or set {BROWSER_ENV} to a Chromium or Chrome executable")
SERVER_START_TIMEOUT_S = 90
_WRITTEN = pytest.StashKey[list]()  # the artifact folders of this run, for the summary


def find_chromium() -> str | None:
    """The browser to drive: ``$CROSSMODAL_EDU_CHROMIUM`` if set, else the first on PATH."""
    chosen = os.environ.get(BROWSER_ENV)
    if chosen:
        return chosen
    return next((path for path in map(shutil.which, BROWSER_NAMES) if path), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(f"Chromium not found (looked for {', '.join(BROWSER_NAMES)} on PATH): {INSTALL_HINT}")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{BROWSER_ENV}={path} is not an executable file")
    return path


@pytest.fixture
def artifacts(request) -> Path:
    """Where this test's screenshots go, emptied of an earlier run's."""
    folder = ARTIFACTS / request.node.name.replace("[", "-").replace("]", "")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    request.config.stash.setdefault(_WRITTEN, []).append(folder)
    return folder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings for a quiet, predictable JupyterLab: no news prompt or update check stealing
    focus, and every cell attached to the page (no windowing), so every output really renders."""
    settings = {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }
    for plugin, values in settings.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class JupyterLab:
    """A running ``jupyter lab`` server: its URL, token and the folder it serves."""

    def __init__(self, root: Path, home: Path, log_path: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        settings = home / "lab-settings"
        _write_lab_settings(settings)
        env = {key: value for key, value in os.environ.items()
               if key not in {"JUPYTER_PATH", "MPLBACKEND"}}  # `course.py test` sets Agg: not what a learner has
        env.update({
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
            "IPYTHONDIR": str(home / "ipython"),
        })
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.news_url=None",
            # window.jupyterapp: lets the test read the notebook model (outputs, execution counts)
            "--LabApp.expose_app_in_browser=True",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def _request(self, path: str, method: str = "GET") -> int:
        request = urllib.request.Request(f"{self.base_url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_ready(self, timeout: float = SERVER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self._request("/api/status") == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"jupyter lab did not answer on port {self.port} within {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """Shut the server down with its kernels (each kernel also exits when its server dies)."""
        if self.process.poll() is None:
            try:
                self._request("/api/shutdown", method="POST")
                self.process.wait(timeout=20)
            except Exception:  # not answering: stop it the hard way below
                pass
        for stop in (self.process.terminate, self.process.kill):
            if self.process.poll() is None:
                stop()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self._log.close()


@pytest.fixture
def jupyterlab(tmp_path, artifacts):
    """Start JupyterLab on a temporary copy of the lessons a test asks for; stop it afterwards.

    Use as ``lab = jupyterlab("notebooks/02_cross_modal_attention.ipynb", ...)``.
    """
    servers: list[JupyterLab] = []

    def start(*notebooks: str) -> JupyterLab:
        root = tmp_path / "course"
        root.mkdir()
        for notebook in notebooks:  # a copy: running it in the browser would save outputs
            shutil.copy(ROOT / notebook, root / Path(notebook).name)
        server = JupyterLab(root, tmp_path / "jupyter-home", artifacts / "jupyterlab.log")
        servers.append(server)
        server.wait_until_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def lab_page(chromium, artifacts, request):
    """A headless Chromium page (Playwright, driving the system's Chromium), closed afterwards.

    When the test fails, the page as it was is saved as ``failure.png`` with the browser's console.
    """
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright is missing: install the test tools with `pip install -e '.[test]'` "
               "(`python3 course.py setup` does this)")
    console: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # Only the local server: the lessons' Colab badges and links stay unfetched.
            page.route(lambda url: not url.startswith("http://127.0.0.1:"), lambda route: route.abort())
            page.set_default_timeout(60_000)
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: console.append(f"uncaught: {error}"))
            yield page
            if getattr(request.node, "_call_failed", False):
                page.screenshot(path=artifacts / "failure.png", full_page=True)
        finally:
            (artifacts / "browser-console.log").write_text("\n".join(console) + "\n")
            browser.close()



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item._call_failed = True  # for lab_page's teardown: screenshot the failure


def pytest_terminal_summary(terminalreporter, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "tests/browser/" in r.nodeid]
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"browser test skipped: {reason.removeprefix('Skipped: ')}")
    for folder in config.stash.get(_WRITTEN, []):
        terminalreporter.write_line(f"browser test screenshots and logs: {folder}")
