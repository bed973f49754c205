"""The status page at the admin address's `/`, in a real headless Chromium and without one.

The browser test drives Debian's Chromium through its own /usr/bin/chromedriver (Selenium
is given the driver and browser paths, so Selenium Manager never downloads anything),
against a real `xds-server --file` process with a real Envoy connected. The screenshot is
kept in the test's tmp_path and, when XDS_TEST_ARTIFACTS names a directory, copied there
as status-page.png. The static test is a plain HTTP GET over hand-made admin state: the page
is complete without JavaScript and escapes what it shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness.admin_state import NACK_ERROR, AdminState, serving
from tests.harness.e2e import WAIT, Mesh
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.test_e2e_file_registry import service, write
from xds_server import types
from xds_server.admin import AdminServer
from xds_server.cache import Prepared
from xds_server.events import EventLog
from xds_server.events_changes import Changes
from xds_server.snapshot import TypeSnapshot

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(60)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
XSS = "<script>alert(1)</script>"
NODE = "envoy-page"
HOSTILE_SUBSET = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "web"},
    "spec": {"host": "web", "subsets": [{"name": "owned", "labels": {"owner": XSS}}]},
}


def get_page(url: str) -> tuple[dict[str, str], str]:
    """GET as a browser asks for it (Accept: text/html), no JavaScript involved."""
    req = urllib.request.Request(url, headers={"Accept": "text/html"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return dict(r.headers), r.read().decode()


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


# ------------------------------------------------------------------- static rendering


class HostileState(AdminState):
    """The hand-made admin state, its sources and policies carrying markup."""

    SOURCES: Final = [
        {"name": "file", "kind": "file", "synced": True, "stale": False, "error": None,
         "services": 1, "rejected": [f"registry.yaml: services[1]: invalid name {XSS!r}"],
         "holding": False},
        {"name": "k8s", "kind": "kubernetes", "synced": True, "stale": False,
         "error": None, "services": 0, "rejected": [], "holding": True,
         "hold_reason": "would remove 10 of 10 services", "held_removals": 10,
         "notes": [f"httproutes.gateway.networking.k8s.io (v1) is not served {XSS}"]},
    ]  # fmt: skip
    POLICIES: Final = [
        {"kind": "VirtualService", "namespace": "shop", "name": XSS, "origin": "p.yaml:1:1",
         "state": "REJECTED", "reasons": [f"bad host {XSS}"], "services": ["api.shop"],
         "source": "consul"},
    ]  # fmt: skip

    def server(self, address: str = "127.0.0.1:0") -> AdminServer:
        server = super().server(address)
        server.sources = lambda: self.SOURCES
        server.policies = lambda: self.POLICIES
        self.cache.events = hostile_events()
        return server


def hostile_events() -> EventLog:
    """One event from a source named with markup, NACKed by a proxy whose node id and
    error carry markup, and one still pending on another such proxy."""
    now = [50.0]
    log = EventLog(10, clock=lambda: now[0], wall=lambda: 1_700_000_000.0 + now[0])
    changes = Changes(XSS)
    changes.add("services_added", XSS)
    (eid,) = log.record([changes], 48.0)
    log.connect(1, f"nacker{XSS}", "web")
    log.connect(2, f"waiter{XSS}", "web")
    clusters = TypeSnapshot(types.CLUSTER, ())
    log.applied("web", Prepared(None, {types.CLUSTER: clusters}), (eid,))
    log.finished((eid,))
    carried, _mark = log.carry(1, types.CLUSTER, clusters, 0)
    log.answered(1, carried, types.CLUSTER, f"bad {XSS}")
    return log


def test_page_renders_everything_server_side_and_escapes_it() -> None:
    state = HostileState()
    state.connect()
    with serving(state) as url:
        headers, body = get_page(f"{url}/?group=web&type=clusters&name=api")
        text_index = get_text(url + "/")
        js = get_text(url + "/static/status.js")

    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    # Proxies with their per-type state and Envoy's NACK error.
    assert "envoy-1" in body and "envoy-2" in body
    assert "state-nacked" in body and "state-synced" in body and "state-stale" in body
    assert NACK_ERROR.replace("'", "&#x27;").replace(">", "&gt;") in body
    # Sources with their state and rejected entries; policies with state and reasons.
    assert ">HOLDING<" in body and "would remove 10 of 10 services" in body
    assert "httproutes.gateway.networking.k8s.io (v1) is not served &lt;script" in body
    assert ">REJECTED<" in body and "<td>consul</td>" in body  # the policy's source
    # The snapshot browser: names of the type, and the chosen one as Envoy JSON.
    assert 'href="/?group=web&amp;type=clusters&amp;name=backend"' in body
    pre = body.split('<pre id="resource-json">', 1)[1].split("</pre>", 1)[0]
    assert "&quot;@type&quot;: &quot;type.googleapis.com/envoy.config.cluster.v3.Cluster" in pre
    assert "&quot;name&quot;: &quot;api&quot;" in pre
    # Recent events: the NACK with the proxy and its error, who is pending; as text.
    events = body.split('<section id="events"', 1)[1].split("</section>", 1)[0]
    assert ">PENDING<" in events and "0 of 2" in events
    assert "NACK by nacker&lt;script&gt;" in events and "bad &lt;script&gt;" in events
    assert "pending: waiter&lt;script&gt;" in events
    # Escaped, everywhere: the only <script> is the page's own static file.
    assert XSS not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert body.count("<script") == 1 and '<script src="/static/status.js" defer>' in body
    # Non-browsers keep the plain-text route index; the script is served.
    assert text_index.startswith("xds-server admin")
    assert "fetch(window.location.href" in js


# ------------------------------------------------------------------------ in a browser


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Debian Chromium through its chromedriver; quit at teardown, always."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        # `make test` (and so CI) installs them: missing there is a failure, not a skip.
        missing = f"needs {CHROMIUM} and {CHROMEDRIVER} (make test installs them)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


def keep_screenshot(driver: WebDriver, tmp_path: Path) -> Path:
    """Save the page as PNG in tmp_path, and in $XDS_TEST_ARTIFACTS when that is set."""
    shot = tmp_path / "status-page.png"
    assert driver.save_screenshot(str(shot)), "screenshot failed"
    artifacts = os.environ.get("XDS_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    return shot


def section_text(driver: WebDriver, section: str) -> str:
    return str(driver.find_element(By.ID, section).text)


def wait_text(driver: WebDriver, section: str, predicate: Callable[[str], bool], what: str) -> str:
    """Wait (WAIT at most) for the section's rendered text to satisfy `predicate`."""

    def check(d: WebDriver) -> str | bool:
        text = section_text(d, section)
        return text if predicate(text) else False

    try:
        return str(wait(driver).until(check))
    except Exception as exc:
        raise AssertionError(
            f"{section}: {what}; it shows:\n{section_text(driver, section)}"
        ) from exc


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """WAIT at most, retrying when the live refresh swapped an element out under us."""
    return WebDriverWait(
        driver, WAIT, 0.1, (NoSuchElementException, StaleElementReferenceException)
    )


def click_link(driver: WebDriver, section: str, text: str) -> None:
    def click(d: WebDriver) -> bool:
        d.find_element(By.ID, section).find_element(By.LINK_TEXT, text).click()
        return True

    wait(driver).until(click, f"no link {text!r} in {section}")


def test_status_page_in_chromium(
    tmp_path: Path,
    chromium: WebDriver,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., Any],
) -> None:
    registry = tmp_path / "registry.yaml"
    web = service("web", {"address": "127.0.0.1", "port": free_port()})
    hostile = service("web", {"address": "127.0.0.1", "port": free_port()}) | {"name": XSS}
    write(registry, [web, hostile])  # the hostile name is rejected: not a DNS name
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(HOSTILE_SUBSET))  # rejected, quoting the label
    port = free_port()
    server = xds_server_factory(
        "--file", str(registry), "--file-interval", "1h", "--http-listener-port", str(port),
        "--policy", str(policy),
    )  # fmt: skip
    mesh = Mesh(server, port, NODE)
    mesh.envoy(envoy_factory)
    driver = chromium

    driver.get(server.admin_url + "/")
    # The connected Envoy, every type SYNCED (rendered by the server; kept live by the JS).
    row = wait_text(
        driver, "proxies",
        lambda t: any(NODE in line and line.count("SYNCED") == 4 for line in t.splitlines()),
        f"{NODE} with cds, eds, lds and rds SYNCED",
    )  # fmt: skip
    assert "NACKED" not in row and "STALE" not in row
    # The hostile service name is rejected and shown as text: no alert, no script with it.
    sources = wait_text(driver, "sources", lambda t: XSS in t, "the rejected entry, as text")
    assert "SYNCED" in sources
    policies = wait_text(driver, "policies", lambda t: XSS in t, "the subset label, as text")
    assert "REJECTED" in policies and "invalid label value" in policies
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018
    scripts = driver.execute_script("return [...document.scripts].map(s => s.outerHTML)")
    assert scripts == ['<script src="/static/status.js" defer=""></script>']

    # Into the Envoy's group (the link in its row); then a registry edit shows up live.
    (group,) = {p["group"] for p in server.get("/debug/proxies")}
    click_link(driver, "proxies", group)
    wait_text(driver, "snapshot", lambda t: "web.default:80" in t, "web's cluster listed")
    driver.execute_script("window.notReloaded = true")
    write(registry, [web, hostile, service("newsvc", {"address": "127.0.0.1", "port": 9})])
    wait_text(driver, "snapshot", lambda t: "newsvc.default:80" in t, "the new service, live")
    # ... and as an event, ACKed by the Envoy with its convergence, still without a reload.
    event = wait_text(
        driver, "events",
        lambda t: any("services_added=1 (newsvc.default)" in line and "CONVERGED" in line
                      for line in t.splitlines()),
        "the edit as an event, CONVERGED",
    )  # fmt: skip
    (line,) = [x for x in event.splitlines() if "newsvc.default" in x]
    took = r"(\d+ms|\d+\.\d\ds)"
    assert "1 of 1" in line and re.search(f"{took} / {took} / {took}", line), line
    assert driver.execute_script("return window.notReloaded === true"), "the page reloaded"
    assert "live: refreshed every 2 s" in driver.find_element(By.ID, "refresh").text

    # The snapshot browser: a cluster as Envoy JSON, then its endpoints.
    click_link(driver, "snapshot", "web.default:80")
    cluster = json.loads(driver.find_element(By.ID, "resource-json").text)
    assert cluster["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert cluster["name"] == "web.default:80"
    click_link(driver, "snapshot", "endpoints")
    click_link(driver, "snapshot", "web.default:80")
    endpoints = driver.find_element(By.ID, "resource-json").text
    assert json.loads(endpoints)["cluster_name"] == "web.default:80"

    shot = keep_screenshot(driver, tmp_path)
    assert shot.stat().st_size > 10_000
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
