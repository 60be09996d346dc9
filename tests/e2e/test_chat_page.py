"""The chat page at ``/`` in a real browser: headless Chromium (Debian's package) driven by Selenium.

One ``heron serve`` on the default model, with an API key: the page loads without the key, asks
for it, lists the served model once it is typed (and remembers it), streams a reply token by token
with tok/s shown, and its Stop button ends a long generation: the text stops growing, the page is
ready for the next message, and the server aborted the request. A canned reasoning stream shows
the reasoning apart from the answer and the temperature and max tokens the request carried. A second ``heron serve --no-ui``
answers 404 at ``/`` (checked while it is still loading the model: routing is up by then).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import need
from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server, wait_until

pytestmark = pytest.mark.slow

KEY = "sk-heron-page"
MODEL = "SmolLM2-135M-Instruct"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: records the last reply's text length each time the page changes it: [(ms, length), ...]
RECORD_LENGTHS = """
window.__lengths = [];
new MutationObserver(() => {
  const replies = document.querySelectorAll('.msg.assistant .content');
  const last = replies[replies.length - 1];
  if (last) window.__lengths.push([performance.now(), last.textContent.length]);
}).observe(document.getElementById('messages'), {childList: true, characterData: true, subtree: true});
"""


@pytest.fixture(scope="module")
def server(request) -> Iterator[ServerProcess]:
    have_default_model()
    with running_server(request, "--api-key", KEY, "--kv-cache-memory-bytes", "96MiB") as proc:
        yield proc


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    need(chromium is not None and driver_path is not None,
         "Debian's chromium and chromium-driver are not installed (make setup installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, CSP violations
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(server, browser):
    """The page, opened once (the first test types the key into it)."""
    browser.get(server.base_url + "/")
    return browser


def _unlock(driver) -> None:
    """Give the page the key if no test did yet (so each test also runs on its own)."""
    if _models(driver) != [MODEL]:
        driver.execute_script(f"localStorage.setItem('heron.apiKey', '{KEY}')")
        driver.refresh()
        wait_until(lambda: _models(driver) == [MODEL], 20, "the model list")


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _models(driver) -> list[str]:
    return driver.execute_script("return [...document.getElementById('model').options].map(o => o.value)")


def _ready(driver) -> bool:
    """Not generating: Send enabled, Stop disabled, the prompt box editable."""
    return driver.execute_script(
        "const $ = (id) => document.getElementById(id);"
        "return !$('send').disabled && $('stop').disabled && !$('prompt').disabled")


def _send(driver, text: str, *, max_tokens: int, temperature: float = 0.0) -> None:
    for element_id, value in (("max-tokens", str(max_tokens)), ("temperature", str(temperature)), ("prompt", text)):
        box = driver.find_element("id", element_id)
        box.clear()
        box.send_keys(value)
    driver.execute_script(RECORD_LENGTHS)
    driver.find_element("id", "send").click()


def _console_errors(driver) -> list[str]:
    """Errors the page logged since the last call, less the expected 401 before the key is typed."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and " 401 " not in e["message"]]


def _lengths(driver) -> list[int]:
    return [length for _, length in driver.execute_script("return window.__lengths")]


def _load(server: ServerProcess) -> dict:
    response = httpx.get(server.base_url + "/load", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _aborted(server: ServerProcess) -> float:
    """How many requests ended as ``abort`` (the ``request_success`` counter, whatever its prefix)."""
    text = httpx.get(server.base_url + "/metrics", headers=AUTH, timeout=10).text
    found = re.findall(r'request_success_total\{[^}]*finished_reason="abort"[^}]*\}\s+([0-9.e+]+)', text)
    assert found, "no request_success_total{finished_reason=\"abort\"} in /metrics"
    return max(float(v) for v in found)


def test_page_is_served_without_key_and_asks_for_it(server, page):
    plain = httpx.get(server.base_url + "/", timeout=10)
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/html")
    assert "<script>" in plain.text and not re.search(r"\b(src|href)=\"(?!data:)", plain.text)  # no CDN
    assert httpx.get(server.base_url + "/v1/models", timeout=10).status_code == 401

    wait_until(lambda: "API key" in _text(page, "status"), 20, "the page to ask for the API key")
    assert _models(page) == [] and page.find_element("id", "send").get_attribute("disabled")
    key = page.find_element("id", "api-key")
    key.send_keys(KEY)
    page.find_element("id", "temperature").click()  # leaving the field fires its change event
    wait_until(lambda: _models(page) == [MODEL], 20, "the model list to fill once the key is typed")
    assert page.execute_script("return localStorage.getItem('heron.apiKey')") == KEY

    page.refresh()  # the key is remembered in this browser
    wait_until(lambda: _models(page) == [MODEL], 20, "the model list after a reload")
    assert _ready(page) and _text(page, "status") == "Ready."


def test_reply_streams_in_with_tok_per_s(page):
    _unlock(page)
    _send(page, "Write a short poem about a heron by a lake.", max_tokens=24)
    wait_until(lambda: not _ready(page), 5, "the page to start generating")
    wait_until(lambda: _ready(page), 180, "the reply to finish")

    lengths = _lengths(page)
    growth = sorted(set(lengths))
    assert lengths == sorted(lengths) and growth[-1] > 0, lengths
    assert len(growth) >= 8, f"the reply arrived in {len(growth)} steps, not streamed token by token: {lengths}"
    replies = page.find_elements("css selector", ".msg.assistant .content")
    assert len(replies) == 1 and replies[0].text.strip()
    stats = _text(page, "stats")
    match = re.fullmatch(r"(\d+) tokens · ([0-9.]+) tok/s · first token [0-9.]+ s", stats)
    assert match, stats
    assert 8 <= int(match[1]) <= 24 and float(match[2]) > 0, stats
    assert page.find_element("css selector", ".msg.user .content").text == "Write a short poem about a heron by a lake."
    assert _console_errors(page) == []


def test_stop_ends_a_long_generation(server, page):
    _unlock(page)
    aborted_before = _aborted(server)
    _send(page, "Count from 1 to 1000, one number per line.", max_tokens=4000)
    wait_until(lambda: (_lengths(page) or [0])[-1] >= 20, 120, "the long reply to start streaming")
    assert not _ready(page)
    assert _load(server)["server_load"] == 1  # the request is in flight on the server

    page.find_element("id", "stop").click()
    wait_until(lambda: _ready(page), 5, "the page to be ready again after Stop")
    stopped_at = _lengths(page)[-1]
    time.sleep(1.0)
    assert _lengths(page)[-1] == stopped_at, "the reply kept growing after Stop"
    replies = page.find_elements("css selector", ".msg.assistant")
    assert replies[-1].find_element("css selector", ".note").text == "(stopped)"
    assert _text(page, "status") == "Stopped."
    tokens = int(_text(page, "stats").split()[0])
    assert 0 < tokens < 4000

    # the server aborted the engine request: nothing in flight, nothing running, one more abort counted
    wait_until(lambda: (lambda load: load["server_load"] == 0 and load["num_requests_running"] == 0)(_load(server)),
               10, "the server to drop the stopped request")
    wait_until(lambda: _aborted(server) == aborted_before + 1, 10, "the abort to be counted in /metrics")

    # and the page goes on: the next message gets a reply
    _send(page, "Say hi.", max_tokens=4)
    wait_until(lambda: not _ready(page), 5, "the next message to start")
    wait_until(lambda: _ready(page), 180, "the next reply")
    assert page.find_elements("css selector", ".msg.assistant .content")[-1].text
    assert _console_errors(page) == []


#: replaces the page's fetch for chat completions with a canned stream (a reasoning model's deltas)
#: and keeps the request bodies it was given in window.__bodies
FAKE_REASONING_STREAM = """
window.__bodies = [];
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  if (!String(url).endsWith('chat/completions')) return realFetch(url, init);
  window.__bodies.push(JSON.parse(init.body));
  const chunks = [{reasoning: 'The user asks '}, {reasoning_content: 'for a capital.'}, {content: 'Paris'},
                  {content: ' it is.'}];
  const text = chunks.map((delta, i) => 'data: ' + JSON.stringify({object: 'chat.completion.chunk',
    choices: [{index: 0, delta, finish_reason: i === chunks.length - 1 ? 'stop' : null}],
    usage: {prompt_tokens: 5, completion_tokens: i + 1, total_tokens: i + 6}}) + '\\n\\n').join('') + 'data: [DONE]\\n\\n';
  const bytes = new TextEncoder().encode(text);
  // in two uneven pieces, one event split across them, as a network may deliver it
  const body = new ReadableStream({start(c) { c.enqueue(bytes.slice(0, 101)); c.enqueue(bytes.slice(101)); c.close(); }});
  return new Response(body, {status: 200, headers: {'content-type': 'text/event-stream'}});
};
"""


def test_reasoning_is_shown_apart_and_settings_are_sent(page):
    _unlock(page)
    page.find_element("id", "new-chat").click()
    page.execute_script(FAKE_REASONING_STREAM)
    try:
        _send(page, "Capital of France?", max_tokens=77, temperature=0.3)
        wait_until(lambda: _ready(page) and page.find_elements("css selector", ".msg.assistant .content")
                   and page.find_element("css selector", ".msg.assistant .content").text, 10, "the canned reply")
        reply = page.find_element("css selector", ".msg.assistant")
        reasoning = reply.find_element("css selector", ".reasoning")
        assert reasoning.is_displayed() and reasoning.get_attribute("hidden") is None
        reasoning.find_element("css selector", "summary").click()  # open the collapsed block
        assert reply.find_element("css selector", ".reasoning-text").text == "The user asks for a capital."
        assert reply.find_element("css selector", ".content").text == "Paris it is."
        [body] = page.execute_script("return window.__bodies")
        assert body["model"] == MODEL and body["stream"] is True
        assert body["temperature"] == 0.3 and body["max_tokens"] == 77
        assert body["messages"] == [{"role": "user", "content": "Capital of France?"}]
        assert _text(page, "stats").startswith("4 tokens")
    finally:
        page.refresh()  # the real fetch again
        wait_until(lambda: _models(page) == [MODEL], 20, "the model list after a reload")


def test_no_ui_answers_404_at_root(tmp_path):
    have_default_model()
    proc = ServerProcess(["--no-ui"], tmp_path / "no-ui.log")
    try:
        def answered() -> httpx.Response | None:
            if proc.proc.poll() is not None:
                pytest.fail(f"heron serve --no-ui exited: {proc.log_text()}")
            try:
                return httpx.get(proc.base_url + "/", timeout=2)
            except httpx.TransportError:
                return None

        response = wait_until(answered, 120, "heron serve --no-ui to answer", interval=0.2)
        assert response.status_code == 404, response.text
        assert httpx.get(proc.base_url + "/health", timeout=5).status_code in (200, 503)  # routing is up
    finally:
        proc.stop()
