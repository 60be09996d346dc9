"""vLLM's request extras and OpenAI's wire details shared by the chat and completions routes.

The check vLLM makes across fields of the parsed body (a 400 naming the field), which usage a stream
carries (``stream_options`` and ``--enable-force-include-usage``), whether logprobs name tokens
as ``token_id:N``, and usage as OpenAI's schema has it (absent details left out, not null).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heron.server.errors import APIError

__all__ = ("StreamUsage", "check_vllm_fields", "tokens_as_ids", "usage_body")


def check_vllm_fields(req: Any) -> None:
    """The checks vLLM's request models make beyond field types and ranges (a 64-bit ``seed``,
    the enumerated ``service_tier`` and ``reasoning_effort`` are checked when the body is read):
    ``stream_options`` with a key set only with ``stream: true``."""
    opts = req.stream_options
    if opts is not None and not req.stream and (opts.model_fields_set or opts.model_extra):
        raise APIError(400, "stream_options can only be given when 'stream' is true.", param="stream_options")


@dataclass(frozen=True, slots=True)
class StreamUsage:
    """Which usage a stream carries.

    Attributes:
        final: a last chunk with ``choices: []`` and the request's usage
            (``stream_options.include_usage``, or ``--enable-force-include-usage``).
        continuous: usage so far on every chunk (``continuous_usage_stats``, with ``final``).
    """

    final: bool
    continuous: bool

    @classmethod
    def of(cls, req: Any, settings: Any) -> StreamUsage:
        opts = req.stream_options
        final = bool(opts and opts.include_usage) or bool(getattr(settings, "enable_force_include_usage", False))
        return cls(final, final and bool(opts and opts.continuous_usage_stats))


def tokens_as_ids(req: Any, settings: Any) -> bool:
    """Logprobs name tokens ``token_id:N``: the request's ``return_tokens_as_token_ids``, else the
    server's ``--return-tokens-as-token-ids``."""
    if req.return_tokens_as_token_ids is not None:
        return bool(req.return_tokens_as_token_ids)
    return bool(getattr(settings, "return_tokens_as_token_ids", False))


def usage_body(usage: Any) -> dict[str, Any]:
    """``usage`` as JSON without null details (OpenAI's schema types them as objects)."""
    return usage.model_dump(exclude_none=True)
