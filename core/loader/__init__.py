"""Find and open checkpoints (HF directories, GGUF files) and build the model plugin for them."""

from heron.loader.build import build_model, skip_init
from heron.loader.checkpoint import GENERATION_KEYS, Checkpoint, load_checkpoint
from heron.loader.gguf_file import GGUFFile, gguf_to_hf_name, unpermute_qk
from heron.loader.model_impl import MODEL_IMPLS, RemoteCodeError
from heron.loader.pooling_config import PoolerConfig, resolve_pooler
from heron.loader.resolve import (
    DEFAULT_GGUF,
    ModelNotFoundError,
    cpu_has_native_bf16,
    default_model_path,
    resolve_dtype,
    resolve_model,
)

__all__ = (
    "DEFAULT_GGUF",
    "GENERATION_KEYS",
    "Checkpoint",
    "GGUFFile",
    "MODEL_IMPLS",
    "ModelNotFoundError",
    "PoolerConfig",
    "RemoteCodeError",
    "build_model",
    "cpu_has_native_bf16",
    "default_model_path",
    "gguf_to_hf_name",
    "load_checkpoint",
    "resolve_dtype",
    "resolve_pooler",
    "resolve_model",
    "skip_init",
    "unpermute_qk",
)
