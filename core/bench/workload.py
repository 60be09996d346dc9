"""Benchmark prompts: the same workload for every engine, as token ids and as text.

A prompt is drawn from "word tokens": ids whose text is a space and lowercase ASCII letters
(`` the``, `` costume``). Byte-level BPE never merges across such word boundaries, so the
decoded text of n word tokens encodes back to exactly those n tokens. That lets a server that
only takes text (llama-cpp-python) and one that takes ids (heron offline) see the same prompt.
Without a tokenizer the prompts are synthetic words and their token counts only approximate.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ("Prompt", "load_prompt_file", "load_tokenizer", "random_prompts", "word_token_ids")

_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "grove", "harbor", "island", "jasper",
          "kettle", "lumen", "meadow", "nectar", "orbit", "pebble", "quartz", "river", "summit", "timber")


@dataclass(slots=True)
class Prompt:
    """One benchmark prompt: its text, its token ids (None without a tokenizer), and its length."""

    text: str
    token_ids: list[int] | None
    num_tokens: int


def load_tokenizer(model: str | None) -> Any:
    """The tokenizer of ``model`` (anything :func:`heron.loader.load_checkpoint` opens).

    ``None`` means the bundled default model. Raises ModelNotFoundError when it is missing.
    """
    from heron.loader import load_checkpoint

    return load_checkpoint(model).tokenizer


def word_token_ids(tokenizer: Any) -> list[int]:
    """Ids whose text is a space plus 2+ lowercase ASCII letters and that encode back alone."""
    found = []
    for tid in range(len(tokenizer)):
        text = tokenizer.decode([tid])
        word = text[1:]
        if len(text) > 2 and text[0] == " " and word.isascii() and word.isalpha() and word.islower():
            found.append(tid)
    if not found:
        raise ValueError("The tokenizer has no ' word' tokens to build prompts from; use --prompt-file.")
    return found


def random_prompts(n: int, input_len: int, tokenizer: Any | None = None, seed: int = 0) -> list[Prompt]:
    """``n`` distinct prompts of ``input_len`` tokens (distinct so prefix caching cannot help)."""
    rng = random.Random(seed)
    if tokenizer is None:
        return [_synthetic(rng, input_len) for _ in range(n)]
    vocab = word_token_ids(tokenizer)
    prompts = []
    for _ in range(n):
        ids = [rng.choice(vocab) for _ in range(input_len)]
        text = tokenizer.decode(ids)
        if tokenizer.encode(text, add_special_tokens=False) != ids:  # pragma: no cover - odd tokenizers
            ids = tokenizer.encode(text, add_special_tokens=False)
        prompts.append(Prompt(text, ids, len(ids)))
    return prompts


def load_prompt_file(path: str, n: int, tokenizer: Any | None = None) -> list[Prompt]:
    """``n`` prompts from a file, cycling: JSON lines with a ``prompt`` key, or one prompt a line."""
    texts = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            texts.append(str(json.loads(line)["prompt"]))
        else:
            texts.append(line)
    if not texts:
        raise ValueError(f"{path} holds no prompts; write one per line or JSON lines with a 'prompt' key.")
    prompts = []
    for i in range(n):
        text = texts[i % len(texts)]
        ids = tokenizer.encode(text) if tokenizer is not None else None
        prompts.append(Prompt(text, ids, len(ids) if ids is not None else len(text.split())))
    return prompts


def _synthetic(rng: random.Random, input_len: int) -> Prompt:
    words = [f"{rng.choice(_WORDS)}" for _ in range(input_len)]
    return Prompt(" " + " ".join(words), None, input_len)
