"""``use_beam_search`` on chat and completions: the request's sampling settings as a beam search.

vLLM's semantics: ``n`` is the beam width and the ``n`` best beams come back as ``n`` choices, best
first; ``length_penalty`` weighs finished beams by length. The search itself
(:func:`heron.engine.beam_search.beam_search`) runs one engine step per token for all live beams
and returns one finished output, so to the request layer a beam search is a request whose only
output arrives at the end: whole and streamed answers are built from it as from any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from heron.engine.beam_search import BeamSearchParams, beam_search

__all__ = ("beam_outputs", "beam_params")


def beam_params(body: Any, params: Any) -> BeamSearchParams:
    """The beam search a request with ``use_beam_search: true`` asks for. Raises ValueError (a 400)."""
    if params.structured_outputs is not None:
        raise ValueError("use_beam_search cannot be combined with structured outputs (response_format, "
                         "structured_outputs, guided_* or a forced tool call).")
    return BeamSearchParams(beam_width=params.n, max_tokens=params.max_tokens, ignore_eos=params.ignore_eos,
                            temperature=params.temperature, length_penalty=getattr(body, "length_penalty", 1.0),
                            include_stop_str_in_output=params.include_stop_str_in_output)


async def beam_outputs(engine: Any, prompt_ids: list[int], params: Any, body: Any, request_id: str, *,
                       lora_request: Any = None) -> AsyncIterator[Any]:
    """The search's one finished output, as ``engine.generate`` would yield it (logprobs only when asked)."""
    out = await beam_search(engine, prompt_ids, beam_params(body, params), request_id,
                            priority=getattr(body, "priority", 0), cache_salt=getattr(body, "cache_salt", None),
                            lora_request=lora_request)
    if params.logprobs is None:
        for comp in out.outputs:
            comp.logprobs = None
    yield out
