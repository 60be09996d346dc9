"""What a request asks of the sampler: vLLM's ``SamplingParams``, so users can switch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from heron.engine.errors import TokenIdError
from heron.structured.params import StructuredOutputsParams

__all__ = ("SamplingParams", "StructuredOutputsParams")

_EPS = 1e-5


@dataclass
class SamplingParams:
    """Sampling and stopping settings of one request (all ``n`` samples share them).

    ``temperature=0`` is greedy. ``top_k <= 0`` and ``top_p=1`` disable those filters. ``seed``
    gives the request its own generator, so its samples do not depend on what else is batched.
    Penalties follow vLLM: ``repetition_penalty`` scales logits of tokens seen in the prompt or
    output, ``presence_penalty``/``frequency_penalty`` subtract for tokens in the output.
    ``max_tokens=0`` only reads the prompt (for ``prompt_logprobs``, e.g. log-likelihood scoring):
    the request finishes with ``finish_reason="length"`` and no output token.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    structured_outputs: StructuredOutputsParams | None = None
    #: a zero-argument factory returning a fresh reasoning parser (``is_reasoning_end(output_ids)``);
    #: the engine makes one per sequence (n > 1 siblings never share parser state) and starts the
    #: structured-output constraint once it says reasoning has ended, so thinking models think freely
    reasoning_gate: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    #: filled by the engine: bad_words as token-id sequences
    _bad_words_ids: list[list[int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in (self.stop or []) if s]
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.logit_bias:
            self.logit_bias = {int(k): float(v) for k, v in self.logit_bias.items()}
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be -1, 0 (disabled) or positive, got {self.top_k}.")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if not -2 <= self.presence_penalty <= 2:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2 <= self.frequency_penalty <= 2:
            raise ValueError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}.")
        if self.max_tokens is not None and self.max_tokens < 0:
            raise ValueError(f"max_tokens must be non-negative (0 reads the prompt only), got {self.max_tokens}.")
        if self.min_tokens < 0 or (self.max_tokens is not None and self.min_tokens > self.max_tokens):
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}.")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be non-negative, got {self.logprobs}.")
        if self.prompt_logprobs is not None and self.prompt_logprobs < 0:
            raise ValueError(f"prompt_logprobs must be non-negative, got {self.prompt_logprobs}.")
        if self.allowed_token_ids is not None and not self.allowed_token_ids:
            raise ValueError("allowed_token_ids must not be empty.")
        if self.reasoning_gate is not None and not callable(self.reasoning_gate):
            raise TypeError("reasoning_gate must be a zero-argument factory of reasoning parsers, "
                            f"got {type(self.reasoning_gate).__name__}.")

    def check_token_ids(self, vocab_size: int) -> None:
        """Refuse token ids outside ``[0, vocab_size)`` in every field that holds some.

        ``bad_words`` are checked once tokenized (the engine fills ``_bad_words_ids``).

        Raises:
            TokenIdError: names the field (``param``) and the first bad id.
        """
        fields: tuple[tuple[str, Any], ...] = (
            ("allowed_token_ids", self.allowed_token_ids or ()),
            ("stop_token_ids", self.stop_token_ids or ()),
            ("logit_bias", self.logit_bias or ()),
            ("bad_words", (t for word in self._bad_words_ids for t in word)),
        )
        for param, ids in fields:
            for token in ids:
                if not 0 <= token < vocab_size:
                    raise TokenIdError(param, token, vocab_size)

    @property
    def greedy(self) -> bool:
        return self.temperature < _EPS

    @property
    def needs_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def needs_filters(self) -> bool:
        return (0 < self.top_k) or self.top_p < 1.0 or self.min_p > 0.0

    def clone(self, **changes: Any) -> SamplingParams:
        from dataclasses import replace

        return replace(self, **changes)
