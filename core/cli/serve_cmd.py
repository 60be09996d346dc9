"""``heron serve``: load the model, start the OpenAI-compatible server, drain on SIGTERM.

The HTTP server starts first and answers ``/health`` with 503 "loading" while the model loads
in a background thread, so orchestrators can tell "starting" from "dead".
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from heron.plugins import PluginLoadError, UnknownPluginError, registry
from heron.server.settings import ServerSettings, add_serve_arguments, settings_from_args

__all__ = ("add_parser", "check_plugins")

logger = logging.getLogger("heron.serve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the OpenAI-compatible server",
                       description="Start the OpenAI-compatible HTTP server (flags named as in vLLM).")
    add_serve_arguments(p)
    p.set_defaults(func=_serve)


def check_plugins(settings: ServerSettings) -> list[str]:
    """Every plugin named in the settings, checked against its registry; returns the problems."""
    wanted = [("tool_parsers", settings.tool_call_parser), ("reasoning_parsers", settings.reasoning_parser)]
    if settings.attention_backend != "auto":
        wanted.append(("attention_backends", settings.attention_backend))
    if settings.linear_kernel != "auto":
        wanted.append(("linear_kernels", settings.linear_kernel))
    wanted += [("middlewares", name) for name in settings.middleware]
    problems = []
    for kind, name in wanted:
        if not name:
            continue
        try:
            registry(kind).load(name)
        except (UnknownPluginError, PluginLoadError) as err:
            problems.append(str(err))
    if settings.enable_auto_tool_choice and not settings.tool_call_parser:
        problems.append("--enable-auto-tool-choice needs --tool-call-parser NAME "
                        f"(installed: {', '.join(registry('tool_parsers').names()) or 'none'}).")
    return problems


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    problems = check_plugins(settings)
    if problems:
        for p in problems:
            print(f"heron serve: {p}", file=sys.stderr)
        return 2
    import uvicorn

    from heron.plugins import call_hook, plugin_manager
    from heron.server.app import build_app

    plugin_manager(disabled=settings.disable_plugins)
    app = build_app(settings, engine=None)
    state = app.state.heron

    def load() -> None:
        try:
            from heron.server.engine_client import start_engine

            engine, template = start_engine(settings)
            state.attach(engine, template)
            logger.info("model loaded; serving as %s", ", ".join(settings.model_names))
        except Exception as err:  # /health reports it; requests get 503
            logger.exception("engine failed to start")
            state.failure = f"{type(err).__name__}: {err}"
            state.loading = False

    threading.Thread(target=load, name="heron-loader", daemon=True).start()
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=settings.drain_timeout, access_log=settings.log_requests)
    server = uvicorn.Server(config)

    def on_exit(sig, frame) -> None:  # SIGTERM/SIGINT: stop accepting, let in-flight requests finish
        # uvicorn's own handler would re-raise the signal once the server stopped, killing the
        # process before the engine shuts down and making the exit status -15 instead of 0
        state.draining = True
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True  # a second Ctrl-C: stop waiting for requests
        server.should_exit = True

    server.handle_exit = on_exit
    call_hook("heron_server_started", app=app, settings=settings)
    try:
        server.run()
    finally:
        state.draining = True
        if state.engine is not None:
            state.engine.shutdown()
        call_hook("heron_shutdown", reason="sigterm" if server.should_exit else "closed")
    return 0
