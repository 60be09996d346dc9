"""``heron serve``: load the model, start the OpenAI-compatible server, drain on SIGTERM.

The HTTP server starts first and answers ``/health`` with 503 "loading" while the model loads
in a background thread, so orchestrators can tell "starting" from "dead". If the engine fails to
start, or its loop dies later, the failure is logged, ``/health`` answers 503 with the reason for
a few seconds, and then the server stops and the command exits with status 1, so an
orchestrator restarts it (or the operator sees the error) instead of a server refusing every
request forever. The engine runs in its own process unless ``--engine-in-process``; if that
process dies, the same happens. ``--headless`` (or ``--node-rank`` > 0) runs this node's
tensor-parallel workers only, with no HTTP server.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from heron.plugins import PluginLoadError, UnknownPluginError, registry
from heron.server.settings import ServerSettings, add_serve_arguments, settings_from_args
from heron.server.vllm_compat import add_vllm_arguments

__all__ = ("add_parser", "check_plugins", "network_problems", "uvicorn_options")

logger = logging.getLogger("heron.serve")

#: how long ``/health`` keeps answering 503 with the failure before the process exits
FAILURE_EXIT_DELAY_S = 5.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the OpenAI-compatible server",
                       description="Start the OpenAI-compatible HTTP server (flags named as in vLLM).")
    add_serve_arguments(p)
    add_vllm_arguments(p)  # vLLM's command lines: its flag names, spellings and no-op flags
    p.set_defaults(func=_serve)


def check_plugins(settings: ServerSettings) -> list[str]:
    """Every plugin named in the settings, checked against its registry; returns the problems."""
    wanted = [("tool_parsers", settings.tool_call_parser), ("reasoning_parsers", settings.reasoning_parser)]
    if settings.attention_backend != "auto":
        wanted.append(("attention_backends", settings.attention_backend))
    if settings.linear_kernel != "auto":
        wanted.append(("linear_kernels", settings.linear_kernel))
    wanted += [("middlewares", name) for name in settings.middleware]
    wanted.append(("response_stores", settings.response_store))
    problems = []
    for kind, name in wanted:
        if not name:
            continue
        try:
            found = registry(kind).load(name)
            if kind == "response_stores":
                found(settings)  # its limits are read (and refused) when it is built
        except (UnknownPluginError, PluginLoadError, ValueError) as err:
            problems.append(str(err))
    if settings.lora_modules and not settings.enable_lora:
        problems.append("--lora-modules needs --enable-lora.")
    if settings.data_parallel_size < 1:
        problems.append(f"--data-parallel-size must be at least 1, got {settings.data_parallel_size}.")
    elif settings.data_parallel_size > 1 and settings.engine_in_process:
        problems.append("--data-parallel-size > 1 runs one engine process per replica; drop --engine-in-process.")
    if settings.tensor_parallel_size < 1:
        problems.append(f"--tensor-parallel-size must be at least 1, got {settings.tensor_parallel_size}.")
    elif settings.tensor_parallel_size > 1 and settings.distributed_executor_backend == "uni":
        problems.append("--distributed-executor-backend uni runs one process: it cannot hold "
                        f"--tensor-parallel-size {settings.tensor_parallel_size} ranks; use mp.")
    if settings.enable_auto_tool_choice and not settings.tool_call_parser:
        problems.append("--enable-auto-tool-choice needs --tool-call-parser NAME "
                        f"(installed: {', '.join(registry('tool_parsers').names()) or 'none'}).")
    return problems + network_problems(settings)


def network_problems(settings: ServerSettings) -> list[str]:
    """What is wrong with the TLS, root-path and unix-socket settings (checked before start-up)."""
    problems = []
    if settings.ssl_keyfile and not settings.ssl_certfile:
        problems.append("--ssl-keyfile needs --ssl-certfile (the certificate the key belongs to).")
    if settings.ssl_cert_reqs not in (0, 1, 2):
        problems.append(f"--ssl-cert-reqs {settings.ssl_cert_reqs}: use 0 (none), 1 (optional) or 2 (required).")
    elif settings.ssl_cert_reqs and not settings.ssl_ca_certs:
        problems.append("--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs (the CA that signs client certificates).")
    if settings.ssl_cert_reqs and not settings.ssl_certfile:
        problems.append("--ssl-cert-reqs needs TLS on: --ssl-certfile (and --ssl-keyfile).")
    for flag, path in (("--ssl-keyfile", settings.ssl_keyfile), ("--ssl-certfile", settings.ssl_certfile),
                       ("--ssl-ca-certs", settings.ssl_ca_certs)):
        if path and not os.path.isfile(path):
            problems.append(f"{flag} {path}: no such file.")
    if settings.root_path and not settings.root_path.startswith("/"):
        problems.append(f"--root-path {settings.root_path!r} must start with '/' (e.g. /llm).")
    if settings.uds and not os.path.isdir(os.path.dirname(os.path.abspath(settings.uds))):
        problems.append(f"--uds {settings.uds}: its directory does not exist.")
    return problems


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """``uvicorn.Config`` keywords from the network settings.

    A unix socket (``--uds``) replaces host and port; TLS is on when a certificate is given;
    uvicorn's own access line per request comes with ``--log-requests`` unless
    ``--disable-uvicorn-access-log``. ``--root-path`` is not uvicorn's business: the app itself
    serves both ``/v1/...`` and ``<root>/v1/...`` (see :mod:`heron.server.middleware_stack`), as vLLM does.
    """
    where: dict[str, Any] = {"uds": settings.uds} if settings.uds else {"host": settings.host, "port": settings.port}
    return {
        **where,
        "log_level": settings.uvicorn_log_level,
        "access_log": settings.log_requests and not settings.disable_uvicorn_access_log,
        "ssl_keyfile": settings.ssl_keyfile,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_ca_certs": settings.ssl_ca_certs,
        "ssl_cert_reqs": settings.ssl_cert_reqs,
        "timeout_graceful_shutdown": settings.drain_timeout,
    }


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from heron.server.malloc_tuning import tune_malloc

    tune_malloc()  # before the model loads and threads start: freed activations go back to the OS
    settings = settings_from_args(args)
    problems = check_plugins(settings)
    if problems:
        for p in problems:
            print(f"heron serve: {p}", file=sys.stderr)
        return 2
    from heron.distributed.launch import serve_headless, torchrun_env

    torchrun = torchrun_env()
    if settings.headless or settings.node_rank > 0 or (torchrun and torchrun["rank"] > 0):  # workers only: no HTTP

        return serve_headless(settings)
    import uvicorn

    from heron.plugins import call_hook, plugin_manager
    from heron.server.app import build_app

    plugin_manager(disabled=settings.disable_plugins)
    try:
        app = build_app(settings, engine=None)
    except (PluginLoadError, UnknownPluginError) as err:  # e.g. a middleware factory returning None
        print(f"heron serve: {err}", file=sys.stderr)
        return 2
    state = app.state.heron
    config = uvicorn.Config(app, **uvicorn_options(settings))
    server = uvicorn.Server(config)
    failed = threading.Event()

    def fail(what: str, err: BaseException) -> None:
        """The engine failed to start or died: report it, then stop serving and exit non-zero."""
        reason = f"{type(err).__name__}: {err}"
        print(f"heron serve: {what}: {reason}", file=sys.stderr, flush=True)
        if failed.is_set():
            return
        failed.set()
        logger.error("%s; exiting in %.0f s (status 1)", what, FAILURE_EXIT_DELAY_S)

        def stop() -> None:
            state.draining = True
            server.should_exit = True

        timer = threading.Timer(FAILURE_EXIT_DELAY_S, stop)
        timer.daemon = True
        timer.start()

    def load() -> None:
        try:
            from heron.server.engine_client import start_engine

            engine, template = start_engine(settings)
        except Exception as err:  # /health reports it, then the process exits with status 1
            logger.exception("engine failed to start")
            state.failure = f"{type(err).__name__}: {err}"
            state.loading = False
            fail("the engine failed to start", err)
            return
        state.attach(engine, template)
        # set after start: a loop that already died calls it at once
        engine.on_failure = lambda err: fail("the engine loop failed", err)
        logger.info("model loaded; serving as %s", ", ".join(settings.model_names))

    threading.Thread(target=load, name="heron-loader", daemon=True).start()

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
        reason = "engine failed" if failed.is_set() else "sigterm" if server.should_exit else "closed"
        call_hook("heron_shutdown", reason=reason)
    return 1 if failed.is_set() else 0
