"""Headless Chromium for the end-to-end tests (selenium): the `browser` fixture and a harness page that drives
clients/js/switchyard.js (window.T: subscribers and publishers the tests read back). Chromium only ever loads
pages from 127.0.0.1."""

from __future__ import annotations

import shutil

import pytest

from e2e_helpers import Broker, wait_until

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

# Installed into the page (same origin as ws-ingress): clients and publishers the tests drive and read back.
HARNESS = """
const done = arguments[arguments.length - 1];
import("/switchyard.js").then(SY => {
    const T = window.T = { SY, clients: {} };
    const fast = { minDelayMs: 100, maxDelayMs: 1000 };
    T.subscriber = (name, servers, subjects, options = {}) => {
        const client = new SY.SwitchyardClient({ servers, reconnect: fast });
        const record = T.clients[name] = { client, messages: [], statuses: [] };
        client.onStatus(event => record.statuses.push(event));
        client.subscribe(subjects, m => record.messages.push({
            subject: m.subject, seq: m.seq, epoch: m.epoch, type: m.type,
            content: m.content instanceof Uint8Array ? Array.from(m.content) : m.content }), options);
    };
    T.publisher = (name, servers, subject, intervalMs) => {
        const client = new SY.SwitchyardClient({ servers, reconnect: fast });
        const record = T.clients[name] = { client, ok: [], failed: [], statuses: [], sent: 0 };
        client.onStatus(event => record.statuses.push(event));
        record.timer = setInterval(() => {
            const content = `m${++record.sent}`;
            client.publish(subject, content).then(() => record.ok.push(content),
                                                  error => record.failed.push(error.status));
        }, intervalMs);
    };
    T.stop = name => clearInterval(T.clients[name].timer);
    T.dropConnection = name => T.clients[name].client._socket?.close();
    T.summary = name => {
        const { client, ...rest } = T.clients[name];
        return JSON.parse(JSON.stringify({ ...rest, connected: client.connected }));
    };
    T.closeAll = () => { for (const r of Object.values(T.clients)) { clearInterval(r.timer); r.client.close(); } };
    done("ready");
}, error => done(String(error)));
"""


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromium-driver are not installed: run `make setup` (scripts/setup.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-default-apps",
                     "--proxy-server=direct://", "--proxy-bypass-list=*"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def open_harness(driver, broker: Broker):
    """Loads a page of `broker`'s origin and installs the harness (window.T) into it."""
    driver.get(f"http://127.0.0.1:{broker.port}/health")
    assert driver.execute_async_script(HARNESS) == "ready"


def summary(driver, name: str) -> dict:
    return driver.execute_script("return T.summary(arguments[0])", name)


def browser_wait(driver, script: str, timeout: float, what: str, *args):
    """Polls `script` (which returns a value) until it is truthy; fails with `what` and the last value."""
    last = {}

    def check():
        last["value"] = driver.execute_script(script, *args)
        return last["value"]

    try:
        return wait_until(check, timeout, 0.2, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last value: {last.get('value')!r}") from None
