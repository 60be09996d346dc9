"""Engine logprobs -> OpenAI's chat and legacy completions shapes."""

from __future__ import annotations

from typing import Any

from heron.protocol.common import ChatLogprob, ChatLogprobs, ChatTokenLogprob, CompletionLogprobs

__all__ = ("chat_logprobs", "completion_logprobs", "echo_logprobs", "prompt_logprobs")


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


def chat_logprobs(token_ids: list[int], steps: list[Any], top_n: int, tokenizer: Any) -> ChatLogprobs:
    content = []
    for tid, step in zip(token_ids, steps, strict=False):
        entries = _entries(step) if step else []
        chosen = next((e for e in entries if e[0] == tid), (tid, float("-inf"), None))
        text = _text(tokenizer, tid, chosen[2])
        top = [
            ChatTokenLogprob(token=(t := _text(tokenizer, i, d)), logprob=max(v, -9999.0), bytes=list(t.encode()))
            for i, v, d in [e for e in entries if e[0] != tid or top_n][:top_n]
        ]
        content.append(ChatLogprob(token=text, logprob=max(chosen[1], -9999.0), bytes=list(text.encode()),
                                   top_logprobs=top))
    return ChatLogprobs(content=content)


def completion_logprobs(token_ids: list[int], steps: list[Any], top_n: int, tokenizer: Any,
                        text_offset: int = 0) -> CompletionLogprobs:
    out = CompletionLogprobs()
    offset = text_offset
    for tid, step in zip(token_ids, steps, strict=False):
        entries = _entries(step) if step else []
        chosen = next((e for e in entries if e[0] == tid), None)
        text = _text(tokenizer, tid, chosen[2] if chosen else None)
        out.tokens.append(text)
        out.token_logprobs.append(None if chosen is None else max(chosen[1], -9999.0))
        out.top_logprobs.append(
            None if step is None else {_text(tokenizer, i, d): max(v, -9999.0) for i, v, d in entries[:top_n]}
        )
        out.text_offset.append(offset)
        offset += len(text)
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
            str(tid): {"logprob": max(float(getattr(lp, "logprob", lp)), -9999.0), "rank": getattr(lp, "rank", None),
                       "decoded_token": _text(tokenizer, int(tid), getattr(lp, "decoded_token", None))}
            for tid, lp in step.items()
        })
    return out


def echo_logprobs(prompt_ids: list[int], steps: list[Any] | None, top_n: int, tokenizer: Any) -> CompletionLogprobs:
    """The legacy logprobs object for an echoed prompt: the first token has no logprob, the others
    their logprob given what precedes them (what lm-evaluation-harness scores)."""
    steps = list(steps or [])
    steps += [None] * (len(prompt_ids) - len(steps))
    return completion_logprobs(prompt_ids, steps, top_n, tokenizer)
