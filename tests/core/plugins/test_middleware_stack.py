"""Middleware plugins wrap the API-key check and the router: 401s, 404s and 405s go through them."""

from __future__ import annotations

import logging

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from heron.plugins import PluginLoadError, registry
from heron.server import ServerSettings, build_app
from heron.server.state import ServerState

UI = "http://ui.example"
BUILT_INS = ["request_id", "cors", "access_log"]


@pytest.fixture
def client_for():
    clients = []

    def make(**settings):
        client = TestClient(build_app(ServerSettings(**settings)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


class _Lines(logging.Handler):
    """Collects one logger's messages (Litestar's logging setup replaces the root handlers caplog uses)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _listen(name: str):
    logger, handler = logging.getLogger(name), _Lines()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def access_log():
    listening = _listen("heron.access")
    handler = next(listening)
    yield lambda: handler.lines
    next(listening, None)  # remove the handler


@pytest.fixture
def server_log():
    yield from _listen("heron.server")


def test_build_app_still_returns_the_litestar_app_with_its_state():
    app = build_app(ServerSettings(middleware=BUILT_INS))
    assert isinstance(app, Litestar)
    assert isinstance(app.state.heron, ServerState)


def test_a_401_carries_cors_headers_a_request_id_and_an_access_log_line(client_for, access_log):
    client = client_for(api_key=["k1"], middleware=BUILT_INS, cors_origins=[UI])
    resp = client.get("/v1/models", headers={"Origin": UI, "X-Request-Id": "rid-401"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    assert resp.headers["access-control-allow-origin"] == UI
    assert resp.headers["x-request-id"] == "rid-401"
    lines = access_log()
    assert len(lines) == 1 and '"GET /v1/models" 401' in lines[0] and "request_id=rid-401" in lines[0]
    # a preflight still needs no key, and a good key still gets through every layer
    pre = client.options("/v1/chat/completions", headers={"Origin": UI, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == UI
    ok = client.get("/health", headers={"Origin": UI, "Authorization": "Bearer k1"})
    assert ok.headers["access-control-allow-origin"] == UI and "x-request-id" in ok.headers


def test_unknown_routes_and_methods_pass_through_the_middlewares(client_for, access_log):
    client = client_for(middleware=BUILT_INS, cors_origins=[UI])
    missing = client.get("/v1/no-such-route", headers={"Origin": UI, "X-Request-Id": "rid-404"})
    assert missing.status_code == 404
    assert missing.headers["x-request-id"] == "rid-404"
    assert missing.headers["access-control-allow-origin"] == UI
    wrong = client.put("/health", headers={"X-Request-Id": "rid-405"})
    assert wrong.status_code == 405 and wrong.headers["x-request-id"] == "rid-405"
    lines = access_log()
    assert any('"GET /v1/no-such-route" 404' in line and "request_id=rid-404" in line for line in lines), lines
    assert any('"PUT /health" 405' in line for line in lines), lines


def test_request_id_flag_puts_ids_on_404s_too(client_for):
    client = client_for(enable_request_id_headers=True)
    resp = client.get("/nowhere")
    assert resp.status_code == 404 and len(resp.headers["x-request-id"]) == 32


def _tracer(label: str, seen: list):
    def factory(settings):
        def middleware(app):
            async def wrapped(scope, receive, send):
                seen.append(f"{label} in")

                async def note(message):
                    if message["type"] == "http.response.start":
                        seen.append(f"{label} saw {message['status']}")
                    await send(message)

                await app(scope, receive, note)

            return wrapped

        return middleware

    return factory


def test_operator_order_is_outermost_first_and_auth_is_inside(client_for):
    seen: list[str] = []
    undo = [registry("middlewares").register(name, _tracer(name, seen)) for name in ("trace_outer", "trace_inner")]
    try:
        client = client_for(api_key=["k"], middleware=["trace_outer", "trace_inner"])
        assert client.get("/v1/models").status_code == 401
    finally:
        for u in undo:
            u()
    assert seen == ["trace_outer in", "trace_inner in", "trace_inner saw 401", "trace_outer saw 401"]


def test_a_raising_middleware_is_named_and_answered_with_a_500(client_for, server_log):
    def broken(settings):
        def middleware(app):
            async def wrapped(scope, receive, send):
                if scope["path"] == "/boom":
                    raise RuntimeError("middleware exploded")
                await app(scope, receive, send)

            return wrapped

        return middleware

    undo = registry("middlewares").register("explodes_sometimes", broken)
    try:
        client = client_for(middleware=["request_id", "explodes_sometimes"])
        resp = client.get("/boom")
        assert resp.status_code == 500
        assert "'explodes_sometimes'" in resp.json()["error"]["message"]
        assert "x-request-id" in resp.headers  # the outer middleware still ran
        assert "middleware plugin 'explodes_sometimes' failed on GET /boom" in server_log.lines
        assert client.get("/health").status_code == 503  # other requests are served (loading state)
    finally:
        undo()


def test_a_factory_returning_none_is_refused_naming_the_plugin(fake_dist):
    fake_dist("heron-fake-none-mw", {"heron.middlewares": {"returns_none": "heron_fake_none_mw:factory"}},
              {"heron_fake_none_mw": "def factory(settings):\n    return None\n"})
    with pytest.raises(PluginLoadError) as info:
        registry("middlewares").load("returns_none")
    message = str(info.value)
    assert "\n" not in message
    assert "'returns_none'" in message and "heron_fake_none_mw:factory" in message
    assert "the factory returned None" in message
    from heron.cli.serve_cmd import check_plugins  # what `heron serve` runs before starting

    problems = check_plugins(ServerSettings(middleware=["returns_none"]))
    assert len(problems) == 1 and "'returns_none'" in problems[0] and "\n" not in problems[0]
    with pytest.raises(TypeError, match="factory returned None"):
        registry("middlewares").register("none_in_process", lambda settings: None)


def test_build_app_refuses_a_factory_that_gives_nothing_for_these_settings():
    def picky(settings):  # fine with the defaults, nothing with the operator's settings
        return None if settings.cors_origins == ["http://picky"] else (lambda app: app)

    undo = registry("middlewares").register("picky", picky)
    try:
        with pytest.raises(PluginLoadError, match="'picky'.*the factory returned None") as info:
            build_app(ServerSettings(middleware=["picky"], cors_origins=["http://picky"]))
        assert "\n" not in str(info.value)
    finally:
        undo()
    with pytest.raises(TypeError, match="'not_callable'.*returned a str, which is not an ASGI middleware"):
        registry("middlewares").register("not_callable", lambda settings: "oops")
    with pytest.raises(TypeError, match="cannot wrap an app: middleware.app=.... raised TypeError"):
        registry("middlewares").register("no_app_param", lambda settings: (lambda application: application))
    assert not {"not_callable", "no_app_param"} & set(registry("middlewares").names())


def test_serve_refuses_to_start_with_one_line_naming_the_plugin(fake_dist):
    import os
    import subprocess
    import sys

    root = fake_dist("heron-fake-serve-none", {"heron.middlewares": {"serve_none": "heron_fake_serve_none:factory"}},
                     {"heron_fake_serve_none": "def factory(settings):\n    return None\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "heron.cli", "serve", "--middleware", "serve_none", "--port", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heron serve: The middlewares plugin 'serve_none'")
    assert "the factory returned None" in lines[0] and "Traceback" not in out.stderr


def test_litestar_middleware_forms_work_around_unmatched_routes_too(client_for):
    from litestar.middleware import ASGIMiddleware, DefineMiddleware

    class Stamp(ASGIMiddleware):
        def __init__(self, header: bytes) -> None:
            self.header = header

        async def handle(self, scope, receive, send, next_app) -> None:
            async def stamped(message):
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (self.header, b"1")]
                await send(message)

            await next_app(scope, receive, stamped)

    class Protocol:  # a MiddlewareProtocol class, wrapped in DefineMiddleware
        def __init__(self, app, header: bytes) -> None:
            self.app, self.header = app, header

        async def __call__(self, scope, receive, send):
            async def stamped(message):
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (self.header, b"1")]
                await send(message)

            await self.app(scope, receive, stamped)

    undo = [registry("middlewares").register("stamp_asgi", lambda settings: Stamp(b"x-asgi")),
            registry("middlewares").register("stamp_define",
                                             lambda settings: DefineMiddleware(Protocol, header=b"x-define"))]
    try:
        client = client_for(middleware=["stamp_asgi", "stamp_define"])
        for resp in (client.get("/health"), client.get("/missing")):
            assert resp.headers["x-asgi"] == "1" and resp.headers["x-define"] == "1"
    finally:
        for u in undo:
            u()
