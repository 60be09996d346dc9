"""Sampling fields common to chat and completions requests (OpenAI fields + vLLM extras)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from heron.protocol.common import (
    OpenAIModel,
    ResponseFormat,
    StreamOptions,
    StructuredOutputsRequest,
)

__all__ = ("SamplingFields",)


class SamplingFields(OpenAIModel):
    """Fields shared by ``/v1/chat/completions`` and ``/v1/completions``.

    Ranges are checked by the server when converting to ``SamplingParams`` so that every error
    names the offending parameter in OpenAI's error shape.
    """

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    #: a 64-bit integer, as vLLM takes
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    # vLLM extras
    #: a real beam search of width ``n`` (the ``n`` best beams come back, best first)
    use_beam_search: bool = False
    #: beam search: finished beams score ``logprob / length ** length_penalty``
    length_penalty: float = 1.0
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    prompt_logprobs: int | None = None
    priority: int = 0
    cache_salt: str | None = None
    truncate_prompt_tokens: int | None = None
    request_id: str | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    structured_outputs: StructuredOutputsRequest | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_json_object: bool | None = Field(default=None, exclude=True)
    #: vLLM's token-id extras: the prompt's and each choice's token ids in the answer, and
    #: ``token_id:N`` in place of token text in logprobs (None: the server's
    #: ``--return-tokens-as-token-ids``)
    return_token_ids: bool | None = None
    return_tokens_as_token_ids: bool | None = None
