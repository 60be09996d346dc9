"""vLLM's runtime adapter routes: ``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter``.

Served only when runtime updating is allowed (``--allow-runtime-lora-updating``,
``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` or ``HERON_ALLOW_RUNTIME_LORA_UPDATING``); otherwise they
are unknown routes (404), as in vLLM. Success is vLLM's plain-text sentence; refusals are
OpenAI-shaped JSON errors (see :class:`heron.server.lora.LoRAServing`).
"""

from __future__ import annotations

from litestar import Request, Response, post

from heron.protocol.lora import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest
from heron.server.lora import LoRAServing, runtime_updating
from heron.server.state import ServerState, read_body

__all__ = ("lora_routes",)


def lora_routes(state: ServerState) -> list:
    """The two routes, or none when runtime updating is not allowed."""
    s = state.settings
    if not runtime_updating(s):
        return []
    if state.lora is None:
        state.lora = LoRAServing(s)

    @post("/v1/load_lora_adapter", status_code=200, summary="Load a LoRA adapter at run time")
    async def load_lora_adapter(request: Request) -> Response:
        req = await read_body(request, LoadLoRAAdapterRequest, s.max_request_body_bytes, s.max_json_depth)
        await state.lora.load(state.require_engine(), req.lora_name, req.lora_path)
        return Response(f"Success: LoRA adapter '{req.lora_name}' added successfully.", media_type="text/plain")

    @post("/v1/unload_lora_adapter", status_code=200, summary="Unload a LoRA adapter")
    async def unload_lora_adapter(request: Request) -> Response:
        req = await read_body(request, UnloadLoRAAdapterRequest, s.max_request_body_bytes, s.max_json_depth)
        await state.lora.unload(state.require_engine(), req.lora_name)
        return Response(f"Success: LoRA adapter '{req.lora_name}' removed successfully.", media_type="text/plain")

    return [load_lora_adapter, unload_lora_adapter]
