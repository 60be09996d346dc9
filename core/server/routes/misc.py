"""Small routes: models (and LoRA adapters), health, ping, version, load, metrics, tokenize, detokenize."""

from __future__ import annotations

import asyncio

from litestar import Request, Response, get, post

import heron
from heron.chat import ChatTemplateError, normalize_messages, render_chat
from heron.protocol.common import ModelCard, ModelList
from heron.protocol.completions import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from heron.server.errors import APIError
from heron.server.lora import check_known_model, loaded_adapters
from heron.server.requests import served_runner
from heron.server.routes.pooling import capabilities
from heron.server.sampling import out_of_vocabulary
from heron.server.state import ServerState, read_body

__all__ = ("misc_routes",)


def misc_routes(state: ServerState) -> list:
    s = state.settings

    @get("/v1/models", summary="List served models")
    async def models() -> dict:
        engine = state.require_engine()
        runner, served = served_runner(engine), capabilities(state)
        cards = [
            ModelCard(id=name, root=s.model or name, max_model_len=engine.max_model_len,
                      tool_call_parser=s.tool_call_parser, reasoning_parser=s.reasoning_parser,
                      runner=runner, capabilities=served)
            for name in s.model_names
        ]
        cards += [ModelCard(id=lora.lora_name, root=lora.lora_path, parent=lora.base_model_name or state.model_name,
                            max_model_len=engine.max_model_len, runner=runner, capabilities=served)
                  for lora in loaded_adapters(engine)]
        return ModelList(data=cards).model_dump()

    @get("/health", summary="200 when the engine is alive, 503 with a reason otherwise")
    async def health() -> Response:
        if state.failure:
            reason = f"engine failed to start: {state.failure}"
        elif state.loading:
            reason = "loading"
        elif state.draining:
            reason = "draining"
        elif getattr(state.engine, "error", None) is not None:
            reason = f"engine failed: {state.engine.error}"
        else:
            return Response({"status": "ok"}, status_code=200)
        return Response({"status": "unavailable", "reason": reason}, status_code=503)

    @get("/ping", summary="Liveness probe")
    async def ping() -> dict:
        return {"status": "ok"}

    @get("/version", summary="heron version")
    async def version() -> dict:
        return {"version": heron.__version__}

    @get("/load", summary="Server load: requests in flight and engine queue")
    async def load() -> dict:
        st = state.stats()
        return {"server_load": state.in_flight, "num_requests_running": st.get("num_running", 0),
                "num_requests_waiting": st.get("num_waiting", 0), "kv_cache_usage_perc": st.get("kv_cache_usage", 0.0)}

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @post("/tokenize", status_code=200, summary="Tokenize a prompt or chat messages")
    async def tokenize(request: Request) -> dict:
        req = await read_body(request, TokenizeRequest, s.max_request_body_bytes, s.max_json_depth)
        check_known_model(state, req.model)
        tok = state.require_engine().tokenizer
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "Give exactly one of 'prompt' or 'messages'.", param="prompt")
        if req.messages is not None and not state.chat_template:
            raise APIError(400, "The model has no chat template.", param="messages")

        def run() -> tuple[list[int], list[str] | None]:  # in a worker thread: inputs can be megabytes
            if req.messages is not None:
                try:
                    text = render_chat(state.chat_template, normalize_messages(req.messages),
                                       add_generation_prompt=req.add_generation_prompt,
                                       special_tokens={"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""},
                                       limits=state.render_limits)
                except (ChatTemplateError, ValueError) as err:
                    raise APIError(400, str(err), param="messages") from err
                ids = tok.encode(text, add_special_tokens=False)
            else:
                ids = tok.encode(req.prompt, add_special_tokens=req.add_special_tokens)
            return ids, (tok.convert_ids_to_tokens(ids) if req.return_token_strs else None)

        ids, strs = await asyncio.to_thread(run)
        return TokenizeResponse(count=len(ids), max_model_len=state.engine.max_model_len, tokens=ids,
                                token_strs=strs).model_dump(exclude_none=True)

    @post("/detokenize", status_code=200, summary="Turn token ids back into text")
    async def detokenize(request: Request) -> dict:
        req = await read_body(request, DetokenizeRequest, s.max_request_body_bytes, s.max_json_depth)
        check_known_model(state, req.model)
        tok = state.require_engine().tokenizer
        if any(t < 0 or t >= len(tok) for t in req.tokens):
            bad = next(t for t in req.tokens if not 0 <= t < len(tok))
            raise out_of_vocabulary("tokens", bad, len(tok))
        text = await asyncio.to_thread(tok.decode, req.tokens)
        return DetokenizeResponse(prompt=text).model_dump()

    return [models, health, ping, version, load, metrics, tokenize, detokenize]
