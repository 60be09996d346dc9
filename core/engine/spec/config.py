"""Speculative decoding settings: vLLM's ``speculative_config`` dictionary, checked once at start.

The same field names as vLLM (``method``, ``num_speculative_tokens``, ``prompt_lookup_min``,
``prompt_lookup_max``, ``model``), the same defaults (an n-gram lookup of 5 tokens when neither
bound is given; one bound given sets the other) and the same inference of the method: a ``model``
without a ``method`` is a draft model. Fields vLLM has that change nothing here are refused by
name, so an operator never believes a setting took effect when it did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ("SpeculativeConfig",)

_METHODS = ("ngram", "draft_model")
_KNOWN = frozenset({"method", "num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max", "model",
                    "quantization", "draft_tensor_parallel_size", "disable_by_batch_size"})


@dataclass(slots=True)
class SpeculativeConfig:
    """How to propose draft tokens, and how many per step.

    Attributes:
        method: ``ngram`` (prompt lookup) or ``draft_model`` (a smaller model of the same vocabulary).
        num_speculative_tokens: draft tokens proposed per sequence and step (k).
        prompt_lookup_min: the shortest suffix n-gram an ngram lookup may match.
        prompt_lookup_max: the longest suffix n-gram it tries first.
        model: the draft model's checkpoint (``draft_model``).
        disable_by_batch_size: speculate only while fewer sequences than this run (None: always).
    """

    method: str
    num_speculative_tokens: int
    prompt_lookup_min: int = 5
    prompt_lookup_max: int = 5
    model: str | None = None
    disable_by_batch_size: int | None = None

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> SpeculativeConfig:
        """Read vLLM's dictionary (``--speculative-config`` JSON, ``LLM(speculative_config=...)``).

        Raises:
            ValueError: an unknown field or method, a missing or non-positive token count, bad bounds.
        """
        unknown = sorted(set(spec) - _KNOWN)
        if unknown:
            raise ValueError(f"speculative_config: unknown field(s) {', '.join(unknown)}; heron reads "
                             f"{', '.join(sorted(_KNOWN))}.")
        method = spec.get("method")
        model = spec.get("model")
        if method in (None, "") and model in ("ngram", "[ngram]"):
            method, model = "ngram", None
        if method in (None, ""):
            method = "draft_model" if model else None
        method = {"[ngram]": "ngram", "draft": "draft_model"}.get(method, method)
        if method not in _METHODS:
            raise ValueError(f"speculative_config: method must be one of {', '.join(_METHODS)} (or give 'model' "
                             f"for a draft model), got {spec.get('method')!r}.")
        if method == "draft_model" and not model:
            raise ValueError("speculative_config: method draft_model needs 'model', the draft checkpoint's path.")
        k = spec.get("num_speculative_tokens")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"speculative_config: num_speculative_tokens must be a positive integer, got {k!r}.")
        lo, hi = spec.get("prompt_lookup_min"), spec.get("prompt_lookup_max")
        if lo is None and hi is None:
            lo = hi = 5  # vLLM's defaults
        lo = hi if lo is None else lo
        hi = lo if hi is None else hi
        if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 1 or hi < lo:
            raise ValueError(f"speculative_config: need 1 <= prompt_lookup_min <= prompt_lookup_max, got {lo!r} "
                             f"and {hi!r}.")
        tp = spec.get("draft_tensor_parallel_size")
        if tp not in (None, 1):
            raise ValueError("speculative_config: draft_tensor_parallel_size must be 1 (the draft runs unsplit).")
        if spec.get("quantization") is not None:
            raise ValueError("speculative_config: quantization is read from the draft checkpoint; remove the field.")
        limit = spec.get("disable_by_batch_size")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"speculative_config: disable_by_batch_size must be a positive integer, got {limit!r}.")
        return cls(method, k, lo, hi, model if method == "draft_model" else None, limit)
