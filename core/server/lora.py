"""LoRA adapters on the server: which adapter a request's ``model`` names, and loading at run time.

A generating request's ``model`` is resolved in this order: a served model name (the base model,
no adapter) -> an adapter the engine holds (``--lora-modules``, ``/v1/load_lora_adapter``, or one
a resolver found before) -> with ``--enable-lora``, every installed ``heron.lora_resolvers``
plugin, higher ``priority`` first, then by entry name; the first one that finds the name has its
adapter loaded and used -> else 404 ``model_not_found``. Names and paths that come from clients
are untrusted: only plain names (``heron.lora.safe_adapter_name``) reach a resolver, and
``/v1/load_lora_adapter`` loads only from inside ``--allowed-lora-dirs`` (``heron.lora.confine``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from heron.plugins import registry
from heron.server.errors import APIError
from heron.server.settings import ServerSettings

if TYPE_CHECKING:
    from heron.lora import LoRARequest
    from heron.server.state import ServerState

__all__ = (
    "LoRAServing",
    "check_known_model",
    "check_pooling_model",
    "loaded_adapters",
    "next_lora_id",
    "resolve_model",
    "runtime_updating",
    "startup_adapters",
)

log = logging.getLogger("heron.server")

_IDS = itertools.count(1)
_TRUE = ("1", "true", "yes", "on")


def next_lora_id() -> int:
    """A ``lora_int_id`` never handed out before in this process."""
    return next(_IDS)


def runtime_updating(settings: ServerSettings, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` are served (vLLM's guard)."""
    environ = os.environ if environ is None else environ
    flags = (environ.get(var, "").strip().lower() in _TRUE
             for var in ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "HERON_ALLOW_RUNTIME_LORA_UPDATING"))
    return settings.allow_runtime_lora_updating or any(flags)


def startup_adapters(settings: ServerSettings) -> list[LoRARequest]:
    """The ``--lora-modules`` adapters as requests, to register before serving."""
    from heron.lora import LoRARequest

    return [LoRARequest(m["name"], next_lora_id(), m["path"], base_model_name=m.get("base_model_name"))
            for m in settings.lora_modules]


def loaded_adapters(engine: Any) -> list[LoRARequest]:
    """The adapters ``engine`` holds (none when it has no LoRA support or is not loaded)."""
    list_loras = getattr(engine, "list_loras", None)
    return list(list_loras()) if list_loras is not None else []


def _loaded(engine: Any, name: str) -> LoRARequest | None:
    return next((r for r in loaded_adapters(engine) if r.lora_name == name), None)


def _not_found(state: ServerState, name: str) -> APIError:
    served = ", ".join(state.settings.model_names)
    adapters = [r.lora_name for r in loaded_adapters(state.engine)]
    if adapters:
        served += f" and the LoRA adapters {', '.join(adapters)}"
    return APIError(404, f"The model '{name}' does not exist; this server serves {served}.",
                    param="model", code="model_not_found")


class LoRAServing:
    """One server's resolvers (built on first use) and its runtime load/unload logic."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._resolvers: list[tuple[str, Any]] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    def resolvers(self) -> list[tuple[str, Any]]:
        """``(name, resolver)`` in the order they are asked: ``priority`` descending, then name."""
        if self._resolvers is None:
            reg, found = registry("lora_resolvers"), []
            for name in reg.names():
                try:
                    found.append((name, reg.load(name)(self.settings)))
                except Exception as err:  # noqa: BLE001 - PluginLoadError or a failing __init__: skip it
                    log.error("LoRA resolver %r is not used: %s", name, err)
            self._resolvers = sorted(found, key=lambda item: (-item[1].priority, item[0]))
        return self._resolvers

    async def resolve(self, engine: Any, name: str) -> LoRARequest | None:
        """Ask the resolvers for ``name`` (one search per name at a time); load and return the hit."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        try:
            async with lock:
                return _loaded(engine, name) or await self._ask(engine, name)
        finally:
            if not lock.locked():
                self._locks.pop(name, None)

    async def _ask(self, engine: Any, name: str) -> LoRARequest | None:
        from heron.lora import LoRARequest

        base, failure = self.settings.model_names[0], None
        for rname, resolver in self.resolvers():
            try:
                found = await resolver.resolve(base, name)
            except Exception:  # noqa: BLE001 - a broken resolver must not fail the request
                log.exception("LoRA resolver %r failed on %r", rname, name)
                continue
            if found is None:
                continue
            if not isinstance(found, LoRARequest):
                log.error("LoRA resolver %r returned %r, not a heron.lora.LoRARequest", rname, found)
                continue
            req = dataclasses.replace(found, lora_name=name, lora_int_id=next_lora_id())
            try:
                await engine.add_lora(req)
            except ValueError as err:  # LoRAError: the folder is no usable adapter
                log.warning("LoRA adapter %r found by resolver %r at %s cannot be loaded: %s",
                            name, rname, req.lora_path, err)
                failure = err
                continue
            log.info("LoRA adapter %r found by resolver %r at %s", name, rname, req.lora_path)
            return _loaded(engine, name) or req
        if failure is not None:
            raise APIError(400, f"The LoRA adapter '{name}' was found but could not be loaded: {failure}",
                           param="model")
        return None

    async def load(self, engine: Any, name: str, path: str) -> LoRARequest:
        """``/v1/load_lora_adapter``: every refusal is an APIError (400) saying why."""
        from heron.lora import LoRAError, LoRARequest, confine, safe_adapter_name

        s = self.settings
        if not s.enable_lora:
            raise APIError(400, "LoRA is not enabled; start the server with --enable-lora.")
        if not name or not path:
            raise APIError(400, "Both 'lora_name' and 'lora_path' must be provided.")
        if not safe_adapter_name(name):
            raise APIError(400, f"The adapter name {name!r} is not allowed: use at most 128 letters, digits, "
                                "'.', '_' or '-'.", param="lora_name")
        if name in s.model_names or _loaded(engine, name) is not None:
            raise APIError(400, f"The lora adapter '{name}' has already been loaded.", param="lora_name")
        if not s.allowed_lora_dirs:
            raise APIError(400, "Loading adapters at run time needs --allowed-lora-dirs DIR[,DIR]: the folders "
                                "adapters may be loaded from.", param="lora_path")
        try:
            folder = await asyncio.to_thread(confine, path, s.allowed_lora_dirs)
        except LoRAError as err:
            raise APIError(400, str(err), param="lora_path") from None
        req = LoRARequest(name, next_lora_id(), str(folder))
        try:
            await engine.add_lora(req)
        except ValueError as err:  # LoRAError: not a usable adapter, or the name is taken
            raise APIError(400, str(err), param="lora_path") from None
        log.info("LoRA adapter %r loaded at run time from %s", name, folder)
        return req

    async def unload(self, engine: Any, name: str) -> None:
        """``/v1/unload_lora_adapter``: 404 for a name the engine does not hold."""
        if not name:
            raise APIError(400, "'lora_name' must be provided.", param="lora_name")
        if not await engine.remove_lora(name):
            raise APIError(404, f"The lora adapter '{name}' cannot be found.", param="lora_name")
        log.info("LoRA adapter %r unloaded", name)


def _serving(state: ServerState) -> LoRAServing:
    if state.lora is None:
        state.lora = LoRAServing(state.settings)
    return state.lora


async def resolve_model(state: ServerState, name: str | None) -> LoRARequest | None:
    """The adapter a generating request's ``model`` selects (None: the base model); 404 when unknown."""
    if not name or name in state.settings.model_names:
        return None
    if not state.settings.enable_lora:
        raise _not_found(state, name)
    engine = state.require_engine()  # 503 while loading: which adapters exist is not known yet
    found = _loaded(engine, name)
    if found is not None:
        return found
    from heron.lora import safe_adapter_name

    if safe_adapter_name(name):
        found = await _serving(state).resolve(engine, name)
    if found is None:
        raise _not_found(state, name)
    return found


def check_known_model(state: ServerState, name: str | None) -> None:
    """A served name or a loaded adapter (``/tokenize``: adapters share the base tokenizer); else 404."""
    if name and name not in state.settings.model_names and _loaded(state.engine, name) is None:
        raise _not_found(state, name)


def check_pooling_model(state: ServerState, name: str | None) -> None:
    """Pooling routes serve the base model only: an adapter's name is a 400, an unknown name a 404."""
    if name and name not in state.settings.model_names and _loaded(state.engine, name) is not None:
        raise APIError(400, f"The model '{name}' is a LoRA adapter; adapters serve generation only "
                            "(/v1/chat/completions, /v1/completions, /v1/responses).", param="model")
    if name and name not in state.settings.model_names:
        raise _not_found(state, name)
