"""Network options of a real ``heron serve``: TLS, a unix socket, a root path, vLLM's CORS flags, request logs.

Two servers. One speaks TLS with a certificate the test makes (and asks for client certificates
signed by the test's CA: ``--ssl-ca-certs``, ``--ssl-cert-reqs 2``), sits under ``--root-path /llm``,
turns CORS on with vLLM's flags and logs prompts cut to ``--max-log-len``. The other listens on a
unix socket (``--uds``) with no CORS flag (no CORS headers) and uvicorn's access log off.
The fast tests at the end check the same pieces without a server.
"""

from __future__ import annotations

import ast
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from heron.cli.serve_cmd import network_problems, uvicorn_options
from heron.server import ServerSettings
from heron.server.middleware_stack import middleware_names
from heron_plugins.middlewares.payload_log import OutputCollector
from tests.conftest import need
from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import START_TIMEOUT_S, ServerProcess, _LogOnFailure, wait_until

KEY = "sk-heron-net"
UI = "http://ui.example"
ROOT = "/llm"
MAX_LOG_LEN = 20
LONG_PROMPT = "The quick brown fox jumps over the lazy dog; " * 4  # 180 characters


# -- certificates -------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, both signed by it."""
    need(shutil.which("openssl") is not None, "the openssl command makes the test's certificates")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=heron test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (folder / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=heron test {name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)
    return {name: folder / name for name in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def tls_context(certs: dict[str, Path], *, client_cert: bool = True) -> ssl.SSLContext:
    """Trusts only the test's CA; presents the client certificate unless told not to."""
    ctx = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    if client_cert:
        ctx.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
    return ctx


# -- servers ------------------------------------------------------------------------------------


class NetServer(ServerProcess):
    """A ``heron serve`` reached over TLS or a unix socket: ``client()`` knows how."""

    def __init__(self, flags: list[str], log_path: Path, *, tls: ssl.SSLContext | None = None,
                 uds: Path | None = None) -> None:
        super().__init__(flags, log_path)
        self.tls, self.uds = tls, uds
        self.base_url = f"https://127.0.0.1:{self.port}" if tls else self.base_url

    def client(self, **options) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.uds)) if self.uds else None
        base = "http://heron" if self.uds else self.base_url
        return httpx.Client(base_url=base, transport=transport, verify=self.tls or True, timeout=120, **options)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"heron serve exited with code {self.proc.returncode}; log:\n{self.log_text()}")
                try:
                    if http.get("/health", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"heron serve did not become healthy within {timeout:.0f} s; log:\n{self.log_text()}")


@contextmanager
def net_server(request, flags: list[str], **how) -> Iterator[NetServer]:
    name = request.fixturename
    log_dir = request.getfixturevalue("tmp_path_factory").mktemp("heron-serve")
    server = NetServer(flags, log_dir / f"{name}.log", **how)
    reporter = _LogOnFailure(server, name)
    request.config.pluginmanager.register(reporter, f"heron-serve-log-{name}-{server.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        request.config.pluginmanager.unregister(reporter)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(request, certs) -> NetServer:
    have_default_model()
    flags = ["--api-key", KEY, "--kv-cache-memory-bytes", "64MiB",
             "--ssl-certfile", str(certs["server.pem"]), "--ssl-keyfile", str(certs["server.key"]),
             "--ssl-ca-certs", str(certs["ca.pem"]), "--ssl-cert-reqs", "2", "--root-path", ROOT,
             "--allowed-origins", json.dumps([UI]), "--allow-credentials", "--max-log-len", str(MAX_LOG_LEN)]
    with net_server(request, flags, tls=tls_context(certs)) as proc:
        yield proc


@pytest.fixture(scope="module")
def uds_server(request, tmp_path_factory) -> NetServer:
    have_default_model()
    sock = tmp_path_factory.mktemp("sock") / "heron.sock"
    flags = ["--uds", str(sock), "--kv-cache-memory-bytes", "64MiB", "--disable-uvicorn-access-log"]
    with net_server(request, flags, uds=sock) as proc:
        yield proc


# -- TLS, client certificates and the root path ------------------------------------------------------


@pytest.mark.slow
def test_tls_with_client_certificates_and_the_openai_sdk_under_the_root_path(tls_server, certs):
    with tls_server.client() as http:
        assert http.get("/health").status_code == 200  # probes need no key, with or without the prefix
        assert http.get(f"{ROOT}/health").status_code == 200
        for path in ("/v1/models", f"{ROOT}/v1/models"):  # as vLLM: a proxy may strip the prefix or not
            models = http.get(path, headers={"Authorization": f"Bearer {KEY}"})
            assert models.status_code == 200 and models.json()["data"], (path, models.text)
            assert http.get(path).status_code == 401  # the key still guards every route but the probes
    # no client certificate: the handshake is refused
    with pytest.raises(httpx.TransportError), \
            httpx.Client(verify=tls_context(certs, client_cert=False), timeout=30) as bare:
        bare.get(f"{tls_server.base_url}/health")
    # plain HTTP on the TLS port gets no answer
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/health", timeout=10)
    sdk = openai.OpenAI(base_url=f"{tls_server.base_url}{ROOT}/v1", api_key=KEY, max_retries=0,
                        http_client=httpx.Client(verify=tls_context(certs), timeout=120))
    answer = sdk.completions.create(model="SmolLM2-135M-Instruct", prompt="Say hi", max_tokens=4,
                                    extra_body={"ignore_eos": True})
    assert answer.choices[0].text and answer.usage.completion_tokens == 4


@pytest.mark.slow
def test_docs_under_the_root_path_point_at_it(tls_server):
    with tls_server.client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        page = http.get(f"{ROOT}/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()
        doc = http.get(f"{ROOT}/docs/openapi.json").json()
        assert doc["servers"] == [{"url": ROOT}]  # "try it out" calls go through the proxy's prefix
        assert "/v1/chat/completions" in doc["paths"]


# -- CORS ---------------------------------------------------------------------------------------------


def preflight(http: httpx.Client, origin: str, path: str = "/v1/chat/completions") -> httpx.Response:
    return http.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "authorization, content-type"})


@pytest.mark.slow
def test_vllm_cors_flags_turn_cors_on(tls_server):
    with tls_server.client() as http:
        pre = preflight(http, UI, f"{ROOT}/v1/chat/completions")
        assert pre.status_code == 204, pre.text
        assert pre.headers["access-control-allow-origin"] == UI
        assert pre.headers["access-control-allow-credentials"] == "true"
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert "authorization" in pre.headers["access-control-allow-headers"]
        refused = preflight(http, "http://elsewhere.example")
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        # an ordinary request, a 401 included, carries the headers
        denied = http.get("/v1/models", headers={"Origin": UI})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == UI
        ok = http.get("/v1/models", headers={"Origin": UI, "Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-credentials"] == "true"


@pytest.mark.slow
def test_without_cors_flags_there_are_no_cors_headers(uds_server):
    with uds_server.client() as http:
        pre = preflight(http, UI)
        assert not any(h.startswith("access-control-") for h in pre.headers), dict(pre.headers)
        got = http.get("/v1/models", headers={"Origin": UI})
        assert got.status_code == 200 and "access-control-allow-origin" not in got.headers


# -- unix socket and logs ---------------------------------------------------------------------------


def log_with(server: NetServer, start: int, needle: str) -> str:
    """The server's log since ``start`` once it holds ``needle`` (lines written after the answer went out)."""
    return wait_until(lambda: next((t for t in [server.log_text(start)] if needle in t), None), 10, repr(needle))


@pytest.mark.slow
def test_unix_socket_serves_completions_without_uvicorn_access_lines(uds_server):
    assert uds_server.uds.exists()
    start = uds_server.log_size()
    with uds_server.client() as http:
        done = http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 3, "ignore_eos": True})
        assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 3
    # heron's own access line (--log-requests) is written once the answer went out
    log = log_with(uds_server, start, '"POST /v1/completions" 200')
    assert '"POST /v1/completions HTTP/1.1" 200' not in log, log  # --disable-uvicorn-access-log


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_max_log_len_cuts_the_logged_prompt_and_output(tls_server, stream):
    start = tls_server.log_size()
    with tls_server.client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        done = http.post("/v1/completions", json={"prompt": LONG_PROMPT, "max_tokens": 24, "ignore_eos": True,
                                                  "stream": stream})
        assert done.status_code == 200
    log = log_with(tls_server, start, "Generated response")
    received = [line for line in log.splitlines() if "Received request" in line]
    assert len(received) == 1, log
    cut = f"{LONG_PROMPT[:MAX_LOG_LEN]!r}... (+{len(LONG_PROMPT) - MAX_LOG_LEN} chars)"
    assert cut in received[0] and LONG_PROMPT[:MAX_LOG_LEN + 1] not in received[0]
    assert '"max_tokens":24,"ignore_eos":true' in received[0]  # the parameters are logged too, whole
    generated = [line for line in log.splitlines() if "Generated response" in line]
    assert len(generated) == 1 and "output: '" in generated[0], log
    shown = generated[0].split("output: ", 1)[1]
    assert len(ast.literal_eval(shown.split("...")[0])) <= MAX_LOG_LEN


# -- without a server ---------------------------------------------------------------------------------


def test_uvicorn_options_follow_the_network_settings():
    plain = uvicorn_options(ServerSettings(port=9000))
    assert (plain["host"], plain["port"], plain["access_log"], plain["ssl_certfile"]) == ("127.0.0.1", 9000, False, None)
    sock = uvicorn_options(ServerSettings(uds="/tmp/h.sock", log_requests=True, uvicorn_log_level="warning"))
    assert sock["uds"] == "/tmp/h.sock" and "host" not in sock and "port" not in sock
    assert sock["access_log"] is True and sock["log_level"] == "warning"
    quiet = uvicorn_options(ServerSettings(log_requests=True, disable_uvicorn_access_log=True,
                                           ssl_certfile="c.pem", ssl_keyfile="k.pem", ssl_cert_reqs=2))
    assert quiet["access_log"] is False and quiet["ssl_cert_reqs"] == 2 and quiet["ssl_keyfile"] == "k.pem"


def test_network_problems_are_named_before_start(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    assert network_problems(ServerSettings(ssl_certfile=str(cert))) == []
    problems = network_problems(ServerSettings(ssl_keyfile=str(cert), ssl_cert_reqs=2, root_path="llm",
                                               ssl_ca_certs=str(tmp_path / "missing.pem"),
                                               uds=str(tmp_path / "no" / "dir" / "h.sock")))
    text = "\n".join(problems)
    for part in ("--ssl-keyfile needs --ssl-certfile", "--ssl-cert-reqs needs TLS on", "missing.pem: no such file",
                 "--root-path 'llm' must start with '/'", "its directory does not exist"):
        assert part in text, text


def test_cors_and_request_logging_flags_turn_their_middlewares_on():
    assert middleware_names(ServerSettings()) == []
    assert middleware_names(ServerSettings(allowed_origins=["*"])) == ["cors"]
    assert middleware_names(ServerSettings(allow_credentials=True)) == ["cors"]
    assert middleware_names(ServerSettings(allowed_headers=["x-a"], middleware=["cors"])) == ["cors"]
    assert middleware_names(ServerSettings(log_requests=True, enable_request_id_headers=True)) == \
        ["request_id", "access_log"]


def test_outputs_are_collected_from_streams_and_whole_answers():
    chat = OutputCollector(max_len=5)
    chat.start([(b"content-type", b"text/event-stream; charset=utf-8")])
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
              {"choices": [{"index": 0, "delta": {"content": "Hello"}}, {"index": 1, "delta": {"content": "Hi"}}]},
              {"choices": [{"index": 0, "delta": {"content": " world"}}]}]
    raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    for i in range(0, len(raw), 7):  # however the bytes are split
        chat.feed(raw[i:i + 7].encode())
    assert chat.outputs() == ["'Hello'... (+6 chars)", "'Hi'"]
    whole = OutputCollector(max_len=None)
    whole.start([(b"content-type", b"application/json")])
    whole.feed(json.dumps({"output": [{"type": "message", "content": [{"type": "output_text", "text": "Paris"}]}]})
               .encode())
    assert whole.outputs() == ["'Paris'"]
