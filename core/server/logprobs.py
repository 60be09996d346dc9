"""Engine logprobs -> OpenAI's chat and legacy completions shapes."""

from __future__ import annotations

from typing import Any

from heron.protocol.common import ChatLogprob, ChatLogprobs, ChatTokenLogprob, CompletionLogprobs

__all__ = ("chat_logprobs", "completion_logprobs")


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
