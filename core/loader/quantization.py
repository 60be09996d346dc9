"""Which quantized checkpoints heron runs, and the refusals for those it cannot.

heron reads GGUF files (every type the ``gguf`` package can dequantize) and unquantized HF
checkpoints. An HF checkpoint whose ``config.json`` carries a ``quantization_config`` (AWQ, GPTQ,
FP8, compressed-tensors, bitsandbytes, ...) needs kernels heron does not have, so it is refused
when it is opened, before any weight is read, rather than loaded wrong. The operator's
``--quantization`` (vLLM's flag) must name a method heron has and the checkpoint holds; unset,
heron runs whatever the checkpoint holds.
"""

from __future__ import annotations

from typing import Any

__all__ = ("SUPPORTED_QUANTIZATION", "check_quantization", "hf_quantization_method")

#: ``--quantization`` values heron accepts (None = what the checkpoint holds)
SUPPORTED_QUANTIZATION = ("gguf",)


def hf_quantization_method(config: dict[str, Any]) -> str | None:
    """The ``quant_method`` of an HF ``config.json`` (as a dict), None when it is unquantized.

    A ``quantization_config`` without ``quant_method`` is bitsandbytes' older spelling
    (``load_in_4bit`` / ``load_in_8bit``).
    """
    quant = config.get("quantization_config") or config.get("compression_config")
    if not quant:
        return None
    if not isinstance(quant, dict):
        return str(quant)
    method = quant.get("quant_method") or quant.get("format")
    if method:
        return str(method)
    return "bitsandbytes" if quant.get("load_in_4bit") or quant.get("load_in_8bit") else "unknown"


def check_quantization(requested: str | None, checkpoint_method: str | None, path: str) -> None:
    """Refuse a checkpoint heron cannot run, or a ``--quantization`` it does not match.

    Args:
        requested: the operator's ``--quantization`` (None = whatever the checkpoint holds).
        checkpoint_method: ``"gguf"`` for a GGUF file, the HF ``quant_method``, or None.
        path: the checkpoint, for the messages.

    Raises:
        ValueError: names the unsupported method or value and what heron supports.
    """
    if requested is not None and requested.lower() not in SUPPORTED_QUANTIZATION:
        raise ValueError(
            f"--quantization {requested!r} is not supported; heron supports {', '.join(SUPPORTED_QUANTIZATION)} "
            "(for .gguf checkpoints), or leave it unset to run the checkpoint as it is."
        )
    if checkpoint_method is not None and checkpoint_method not in SUPPORTED_QUANTIZATION:
        raise ValueError(
            f"{path} is quantized with {checkpoint_method} (config.json quantization_config), which heron cannot "
            "run; use an unquantized (bf16/fp16/fp32) checkpoint or a GGUF file of the model."
        )
    if requested is not None and requested.lower() != checkpoint_method:
        raise ValueError(
            f"--quantization {requested} does not match {path}, which is "
            f"{'quantized with ' + checkpoint_method if checkpoint_method else 'not quantized'}; "
            "leave --quantization unset to run the checkpoint as it is."
        )
