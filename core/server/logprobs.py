"""Engine logprobs -> OpenAI's chat and legacy completions shapes.

Each position's engine entry is ``{token_id: Logprob}``: the sampled (or prompt) token first,
then the most likely tokens in rank order. With ``as_ids`` (vLLM's
``return_tokens_as_token_ids``) tokens are named ``token_id:N`` instead of by their text, so that
tokens which are not valid UTF-8 on their own stay identifiable; ``bytes`` keep the text's bytes.
"""

from __future__ import annotations

from typing import Any

from heron.protocol.common import ChatLogprob, ChatLogprobs, ChatTokenLogprob, CompletionLogprobs

__all__ = ("chat_logprobs", "completion_logprobs", "echo_logprobs", "prompt_logprobs")

_FLOOR = -9999.0  # what OpenAI sends for "very unlikely" (and JSON has no -inf)


def _entries(step: Any) -> list[tuple[int, float, str | None]]:
    """One position's candidates as (token_id, logprob, decoded) sorted by rank."""
    items = []
    for tid, lp in step.items():
        value = getattr(lp, "logprob", lp)
        rank = getattr(lp, "rank", None)
        decoded = getattr(lp, "decoded_token", None)
        items.append((rank if rank is not None else 0, int(tid), float(value), decoded))
    items.sort(key=lambda x: (x[0], -x[2]))
    return [(tid, value, dec) for _, tid, value, dec in items]


def _text(tokenizer: Any, tid: int, decoded: str | None) -> str:
    return decoded if decoded is not None else tokenizer.decode([tid])


def _name(tokenizer: Any, tid: int, decoded: str | None, as_ids: bool) -> str:
    return f"token_id:{tid}" if as_ids else _text(tokenizer, tid, decoded)


def _chat_entry(tokenizer: Any, tid: int, value: float, decoded: str | None, as_ids: bool) -> ChatTokenLogprob:
    return ChatTokenLogprob(token=_name(tokenizer, tid, decoded, as_ids), logprob=max(value, _FLOOR),
                            bytes=list(_text(tokenizer, tid, decoded).encode()))


def chat_logprobs(token_ids: list[int], steps: list[Any], top_n: int, tokenizer: Any,
                  as_ids: bool = False) -> ChatLogprobs:
    """Chat's ``logprobs``: per generated token its logprob and the ``top_n`` most likely tokens."""
    content = []
    for tid, step in zip(token_ids, steps, strict=False):
        entries = _entries(step) if step else []
        chosen = next((e for e in entries if e[0] == tid), (tid, float("-inf"), None))
        head = _chat_entry(tokenizer, *chosen, as_ids)
        top = [_chat_entry(tokenizer, i, v, d, as_ids) for i, v, d in entries[:top_n]]
        content.append(ChatLogprob(**head.model_dump(), top_logprobs=top))
    return ChatLogprobs(content=content)


def completion_logprobs(token_ids: list[int], steps: list[Any], top_n: int, tokenizer: Any,
                        text_offset: int = 0, as_ids: bool = False) -> CompletionLogprobs:
    """The legacy logprobs object: ``top_logprobs`` holds the chosen token and the ``top_n`` most
    likely (``top_n + 1`` entries at most, as OpenAI and vLLM: ``logprobs: 0`` gives the chosen
    token's entry); a position without an engine entry (an echoed prompt's first token) is null."""
    out = CompletionLogprobs()
    offset = text_offset
    for tid, step in zip(token_ids, steps, strict=False):
        chosen = None if step is None else step.get(tid)
        decoded = getattr(chosen, "decoded_token", None)
        token = _name(tokenizer, tid, decoded, as_ids)
        out.tokens.append(token)
        out.token_logprobs.append(None if chosen is None else max(float(getattr(chosen, "logprob", chosen)), _FLOOR))
        if step is None:
            out.top_logprobs.append(None)
        else:
            ranked = [(tid, 0.0, decoded)] if chosen is not None else []
            ranked += [e for e in _entries(step) if e[0] != tid]
            out.top_logprobs.append({
                _name(tokenizer, i, d, as_ids): max(float(getattr(step[i], "logprob", step[i])), _FLOOR)
                for i, _, d in ranked[: top_n + 1]})
        out.text_offset.append(offset)
        offset += len(token) if not as_ids else len(_text(tokenizer, tid, decoded))  # offsets count text
    return out


def prompt_logprobs(steps: list[Any] | None, tokenizer: Any) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's ``prompt_logprobs``: per prompt token (None for the first), ``{token_id: {"logprob",
    "rank", "decoded_token"}}`` with the prompt's own token and the top candidates."""
    out: list[dict[str, dict[str, Any]] | None] = []
    for step in steps or []:
        if step is None:
            out.append(None)
            continue
        out.append({
            str(tid): {"logprob": max(float(getattr(lp, "logprob", lp)), _FLOOR), "rank": getattr(lp, "rank", None),
                       "decoded_token": _text(tokenizer, int(tid), getattr(lp, "decoded_token", None))}
            for tid, lp in step.items()
        })
    return out


def echo_logprobs(prompt_ids: list[int], steps: list[Any] | None, top_n: int, tokenizer: Any,
                  as_ids: bool = False) -> CompletionLogprobs:
    """The legacy logprobs object for an echoed prompt: the first token has no logprob, the others
    their logprob given what precedes them (what lm-evaluation-harness scores)."""
    steps = list(steps or [])
    steps += [None] * (len(prompt_ids) - len(steps))
    return completion_logprobs(prompt_ids, steps, top_n, tokenizer, as_ids=as_ids)
