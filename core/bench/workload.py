"""Benchmark prompts: the same workload for every engine, as token ids and as text.

A prompt is drawn from "word tokens": ids whose text is a space and lowercase ASCII letters
(`` the``, `` costume``). Byte-level BPE never merges across such word boundaries, so the
decoded text of n word tokens encodes back to exactly those n tokens. That lets a server that
only takes text (llama-cpp-python) and one that takes ids (heron offline) see the same prompt.
Without a tokenizer the prompts are synthetic words and their token counts only approximate.

No two prompts of one :func:`random_prompts` call share a full prefix-cache block: each starts
with its own run of leading tokens (its index in base ``len(vocabulary)``, one token for up to
that many prompts). Benchmarks take their warm-up prompts from the same call as the timed ones,
so a warm-up never fills the prefix cache with blocks the timed run then finds for free.
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
    """``n`` prompts of ``input_len`` tokens, no two sharing a full prefix-cache block.

    Prompt ``i`` opens with the digits of ``i`` in base ``len(vocabulary)`` (as tokens of a
    shuffled vocabulary), the rest is random: the opening runs differ, so prefix caching cannot
    help any prompt to another's blocks, whatever the block size (at least the opening's length:
    one token up to ``len(vocabulary)`` prompts, two up to its square, ...).

    Raises:
        ValueError: ``input_len`` is shorter than the opening that ``n`` prompts need.
    """
    rng = random.Random(seed)
    vocab = list(word_token_ids(tokenizer)) if tokenizer is not None else list(_WORDS)
    rng.shuffle(vocab)
    openings = _openings(rng, len(vocab), n)
    if n and input_len < len(openings[0]):
        raise ValueError(f"{n} distinct prompts need at least {len(openings[0])} tokens each; "
                         f"raise --input-len above {input_len}.")
    prompts = []
    for digits in openings:
        picks = [vocab[d] for d in digits] + [rng.choice(vocab) for _ in range(input_len - len(digits))]
        if tokenizer is None:  # synthetic words
            prompts.append(Prompt(" " + " ".join(picks), None, input_len))
            continue
        ids = picks
        text = tokenizer.decode(ids)
        if tokenizer.encode(text, add_special_tokens=False) != ids:  # pragma: no cover - odd tokenizers
            ids = tokenizer.encode(text, add_special_tokens=False)
        prompts.append(Prompt(text, ids, len(ids)))
    return prompts


def _openings(rng: random.Random, base: int, n: int) -> list[list[int]]:
    """``n`` distinct digit runs of one length, in base ``base``, in random order."""
    width = 1
    while base**width < n:
        width += 1
    numbers = rng.sample(range(base**width), n)
    return [[(k // base**j) % base for j in reversed(range(width))] for k in numbers]


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

