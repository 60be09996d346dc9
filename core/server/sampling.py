"""Turn an HTTP request's sampling fields into engine ``SamplingParams``, or a 400 naming the field.

(The request's output constraint is read by :mod:`heron.server.constraints`, re-exported here.)
"""

from __future__ import annotations

from typing import Any

from heron.protocol.sampling_fields import SamplingFields
from heron.server.constraints import check_structured, structured_from_request
from heron.server.errors import APIError

__all__ = (
    "build_sampling_params",
    "check_token_ids",
    "check_request_limits",
    "check_structured",
    "out_of_vocabulary",
    "refuse_unsupported",
    "structured_from_request",
    "truncate_prompt",
)

#: OpenAI fields that change generation or the answer and that heron cannot honour: refused, never
#: silently ignored (informational ones such as ``user``, ``metadata`` and ``store`` are accepted)
_UNSUPPORTED = {
    "functions": "the legacy 'functions' field is not supported; send 'tools' instead.",
    "function_call": "the legacy 'function_call' field is not supported; send 'tool_choice' instead.",
    "audio": "audio output is not supported.",
    "prediction": "predicted outputs are not supported.",
    "web_search_options": "web search is not supported.",
}


def refuse_unsupported(req: SamplingFields, *, chat: bool) -> None:
    """Known fields the server cannot honour are refused with a 400 naming them."""
    extra = req.model_extra or {}
    for name, why in _UNSUPPORTED.items():
        if extra.get(name) is not None:
            raise APIError(400, f"'{name}': {why}", param=name)
    modalities = extra.get("modalities")
    if modalities is not None and list(modalities) != ["text"]:
        raise APIError(400, "'modalities': only [\"text\"] is supported.", param="modalities")
    if req.stream and req.prompt_logprobs is not None:
        raise APIError(400, "'prompt_logprobs' are not available when 'stream' is true.", param="prompt_logprobs")
    t = req.truncate_prompt_tokens
    if t is not None and t != -1 and t < 1:
        raise APIError(400, f"truncate_prompt_tokens must be -1 (the model's length) or at least 1, got {t}.",
                       param="truncate_prompt_tokens")
    side = _truncation_side(req)
    if side not in (None, "left", "right"):
        raise APIError(400, f"truncation_side must be 'left' or 'right', got {side!r}.", param="truncation_side")
    if not chat:
        if getattr(req, "suffix", None):
            raise APIError(400, "'suffix' is not supported.", param="suffix")
        best_of = getattr(req, "best_of", None)
        if best_of is not None and best_of != req.n:
            raise APIError(400, "'best_of' other than n is not supported.", param="best_of")


def check_request_limits(settings: Any, req: SamplingFields, *, num_prompts: int = 1) -> None:
    """The per-request limits of docs/serving.md, each a 400 naming the limit and its flag.

    Cheap checks on the parsed body, made before the request is admitted.
    """
    def limit(value: int, most: int, param: str, what: str, flag: str) -> None:
        if value > most:
            raise APIError(400, f"{what} ({value}) exceeds this server's limit of {most} ({flag}).",
                           param=param, code="limit_exceeded")

    limit(num_prompts, settings.max_prompts_per_request, "prompt", "The number of prompts",
          "--max-prompts-per-request")
    limit(req.n, settings.max_n, "n", "n", "--max-n")
    limit(num_prompts * req.n, settings.max_sequences_per_request, "n", "prompts x n",
          "--max-sequences-per-request")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    limit(len(stop), settings.max_stop, "stop", "The number of stop strings", "--max-stop")
    limit(max((len(s) for s in stop), default=0), settings.max_stop_length, "stop", "A stop string's length",
          "--max-stop-length")
    limit(len(req.stop_token_ids or []), settings.max_stop, "stop_token_ids", "The number of stop_token_ids",
          "--max-stop")
    limit(len(req.bad_words or []), settings.max_bad_words, "bad_words", "The number of bad_words",
          "--max-bad-words")
    limit(max((len(w) for w in req.bad_words or []), default=0), settings.max_stop_length, "bad_words",
          "A bad word's length", "--max-stop-length")
    limit(len(req.logit_bias or {}), settings.max_logit_bias, "logit_bias", "The number of logit_bias entries",
          "--max-logit-bias")
    tools = getattr(req, "tools", None)
    if tools:
        limit(len(tools), settings.max_tools, "tools", "The number of tools", "--max-tools")
    if req.priority != 0 and settings.scheduling_policy != "priority":
        raise APIError(400, "'priority' has no effect unless the server runs with --scheduling-policy priority.",
                       param="priority")


def _truncation_side(req: SamplingFields) -> Any:
    """vLLM's ``truncation_side`` extra (read from the body's extra fields), or None."""
    return (req.model_extra or {}).get("truncation_side")


def truncate_prompt(ids: list[int], req: SamplingFields, max_model_len: int) -> list[int]:
    """``truncate_prompt_tokens``: keep the last N tokens (vLLM's ``truncation_side: "right"``
    keeps the first N); -1 keeps as many as the context allows while leaving room for one
    generated token."""
    keep = req.truncate_prompt_tokens
    if keep is None:
        return ids
    if keep == -1:
        keep = max_model_len - 1
    if len(ids) <= keep:
        return ids
    return ids[:keep] if _truncation_side(req) == "right" else ids[-keep:]


def out_of_vocabulary(param: str, token_id: Any, vocab_size: int) -> APIError:
    """The 400 for a token id outside the vocabulary (vLLM's wording: "out of vocabulary")."""
    return APIError(400, f"Token id {token_id} in '{param}' is out of vocabulary: the vocabulary has {vocab_size} "
                         f"tokens (ids 0 to {vocab_size - 1}).", param=param, code="invalid_token_id")


def check_token_ids(params: Any, vocab_size: int) -> None:
    """Every token id the request names is in the vocabulary, else a 400 naming the field."""
    try:
        params.check_token_ids(vocab_size)
    except ValueError as err:
        token_id = getattr(err, "token_id", None)
        if token_id is None:
            raise APIError(400, str(err), param=getattr(err, "param", None), code="invalid_token_id") from err
        raise out_of_vocabulary(err.param, token_id, vocab_size) from err


def _check(cond: bool, param: str, message: str) -> None:
    if not cond:
        raise APIError(400, message, param=param)


def build_sampling_params(
    req: SamplingFields,
    *,
    prompt_len: int,
    max_model_len: int,
    max_tokens: int | None,
    logprobs: int | None,
    defaults: dict[str, Any],
    max_logprobs: int,
    structured: Any = None,
    reasoning_gate: Any = None,
    vocab_size: int | None = None,
    allow_zero_tokens: bool = False,
) -> Any:
    """Validate ranges (400 with ``param``) and build ``SamplingParams``; clamps max_tokens to the context.

    ``reasoning_gate`` is a factory of reasoning parsers (one per sequence) that holds the output
    constraint back until reasoning ends. ``allow_zero_tokens``: ``max_tokens: 0`` (completions'
    echo scoring) is allowed. With ``vocab_size`` every token id of the request is checked.
    """
    from heron.engine.sampling_params import SamplingParams

    scoring_only = allow_zero_tokens and max_tokens == 0  # echo scoring needs no room to generate
    if prompt_len > max_model_len or (prompt_len == max_model_len and not scoring_only):
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt has "
            f"{prompt_len} tokens, leaving no room for output. Please shorten the prompt.",
            param="messages" if hasattr(req, "messages") else "prompt",
            code="context_length_exceeded",
        )
    room = max_model_len - prompt_len
    if max_tokens is not None:
        least = 0 if allow_zero_tokens else 1
        _check(max_tokens >= least, "max_tokens", f"max_tokens must be at least {least}, got {max_tokens}.")
    max_tokens = room if max_tokens is None else min(max_tokens, room)
    _check(req.n >= 1, "n", f"n must be at least 1, got {req.n}.")
    temperature = req.temperature if req.temperature is not None else defaults.get("temperature", 1.0)
    _check(0 <= temperature <= 2, "temperature", f"temperature must be between 0 and 2, got {temperature}.")
    top_p = req.top_p if req.top_p is not None else defaults.get("top_p", 1.0)
    _check(0 < top_p <= 1, "top_p", f"top_p must be in (0, 1], got {top_p}.")
    _check(-2 <= req.presence_penalty <= 2, "presence_penalty", "presence_penalty must be between -2 and 2.")
    _check(-2 <= req.frequency_penalty <= 2, "frequency_penalty", "frequency_penalty must be between -2 and 2.")
    if logprobs is not None:
        _check(0 <= logprobs <= max_logprobs, "top_logprobs" if hasattr(req, "messages") else "logprobs",
               f"logprobs must be between 0 and {max_logprobs}, got {logprobs}.")
    if req.prompt_logprobs is not None:
        _check(0 <= req.prompt_logprobs <= max_logprobs, "prompt_logprobs",
               f"prompt_logprobs must be between 0 and {max_logprobs}.")
    bias = None
    if req.logit_bias:
        try:
            bias = {int(k): float(v) for k, v in req.logit_bias.items()}
        except ValueError as err:
            raise APIError(400, "logit_bias keys must be token ids.", param="logit_bias") from err
        _check(all(-100 <= v <= 100 for v in bias.values()), "logit_bias", "logit_bias values must be in [-100, 100].")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    kwargs: dict[str, Any] = dict(
        n=req.n,
        temperature=temperature,
        top_p=top_p,
        top_k=req.top_k if req.top_k is not None else defaults.get("top_k", 0),
        min_p=req.min_p if req.min_p is not None else 0.0,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty if req.repetition_penalty is not None
        else defaults.get("repetition_penalty", 1.0),
        seed=req.seed,
        stop=stop,
        stop_token_ids=list(req.stop_token_ids or []),
        include_stop_str_in_output=req.include_stop_str_in_output,
        ignore_eos=req.ignore_eos,
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        logprobs=logprobs,
        prompt_logprobs=req.prompt_logprobs,
        skip_special_tokens=req.skip_special_tokens,
        spaces_between_special_tokens=req.spaces_between_special_tokens,
        logit_bias=bias,
        allowed_token_ids=req.allowed_token_ids,
        bad_words=req.bad_words,
        structured_outputs=structured,
        reasoning_gate=reasoning_gate if structured is not None else None,
    )
    try:
        params = SamplingParams(**kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        param = next((k for k in kwargs if k in message), None)
        raise APIError(400, message, param=param) from err
    if vocab_size is not None:
        check_token_ids(params, vocab_size)
    return params
