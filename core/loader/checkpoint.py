"""Open a checkpoint (an HF directory, a GGUF file or split GGUF set): config, tokenizer, generation
defaults, stop tokens, and a lazy stream of HF-named weight tensors. Quantized checkpoints heron
cannot run are refused here, before any weight is read. A checkpoint stored as quantized blocks names its
format (``stored_format``), so a linear kernel that computes on those blocks can ask for them unconverted."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from heron.loader.gguf_config import gguf_config, gguf_tokenizer
from heron.loader.gguf_file import GGUFFile, gguf_shards, gguf_tensors
from heron.loader.light_config import import_config_validators
from heron.loader.model_impl import RemoteCodeError
from heron.loader.quantization import check_quantization, hf_quantization_method
from heron.loader.resolve import resolve_model

__all__ = ("GENERATION_KEYS", "Checkpoint", "load_checkpoint")

log = logging.getLogger(__name__)

#: generation_config.json keys that become default sampling parameters (when present)
GENERATION_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")


@dataclass(slots=True)
class Checkpoint:
    """A model on disk, opened but with its weights not yet read."""

    path: str
    hf_config: Any  # transformers.PretrainedConfig
    tokenizer: Any | None  # HF fast tokenizer (chat_template set when the checkpoint has one)
    generation_defaults: dict[str, Any]
    eos_token_ids: list[int]
    max_model_len: int
    _weights: Callable[[bool], Iterator[tuple[str, torch.Tensor]]] = field(repr=False, default=lambda _: iter(()))
    #: ``"gguf"`` when the weights are stored as quantized GGUF blocks, else None
    stored_format: str | None = None

    def weights(self, quantized: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """HF-named tensors, read lazily one at a time (with a progress bar).

        Args:
            quantized: hand quantized matrices over as their stored blocks
                (:class:`heron.layers.quantized.QuantizedTensor`), not dequantized (``stored_format`` only).
        """
        return self._weights(quantized)


def _int_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def _eos_ids(*sources: Any) -> list[int]:
    ids: list[int] = []
    for value in sources:
        ids += [i for i in _int_list(value) if i not in ids]
    return ids


def _max_model_len(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _fill_architectures(config: Any) -> None:
    """GGUF configs carry no ``architectures``; derive it from the model type."""
    if getattr(config, "architectures", None):
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    config.architectures = [arch or type(config).__name__.removesuffix("Config") + "ForCausalLM"]


def _load_tokenizer(folder: str, **kwargs: Any) -> Any | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, TypeError) as err:
        log.warning("No tokenizer loaded from %s: %s", folder, err)
        return None


def _progress(items: Iterator[tuple[str, torch.Tensor]], total: int) -> Iterator[tuple[str, torch.Tensor]]:
    yield from tqdm(items, total=total, desc="Loading weights", unit="tensor", leave=False)


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


def _dir_weights(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    files = _safetensors_files(folder)
    if not files:
        bins = sorted(folder.glob("pytorch_model*.bin"))
        if not bins:
            raise FileNotFoundError(f"No *.safetensors or pytorch_model*.bin weights in {folder}.")
        for b in bins:
            yield from torch.load(b, map_location="cpu", weights_only=True).items()
        return
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield key, st.get_tensor(key)


def _count_dir_tensors(folder: Path) -> int | None:
    from safetensors import safe_open

    total = 0
    for f in _safetensors_files(folder):
        with safe_open(str(f), framework="pt") as st:
            total += len(st.keys())
    return total or None


def _open_dir(folder: Path, quantization: str | None) -> Checkpoint:
    from transformers import AutoConfig

    import_config_validators()  # before any config class: skips ~70 MiB of model-loading imports
    raw = json.loads((folder / "config.json").read_text())
    check_quantization(quantization, hf_quantization_method(raw), str(folder))
    try:  # never run (or ask to run) code shipped with the checkpoint
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except ValueError as err:
        if "auto_map" in raw:
            arch = (raw.get("architectures") or [raw.get("model_type")])[0]
            raise RemoteCodeError(
                f"{folder} needs remote code: its architecture {arch} (model_type {raw.get('model_type')!r}) exists "
                "only as code shipped with the checkpoint, and heron never runs checkpoint code "
                "(whatever --trust-remote-code says)."
            ) from err
        raise
    _fill_architectures(config)
    has_tokenizer = any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
    tokenizer = _load_tokenizer(str(folder)) if has_tokenizer else None
    gen_file = folder / "generation_config.json"
    gen = json.loads(gen_file.read_text()) if gen_file.is_file() else {}
    return Checkpoint(
        path=str(folder),
        hf_config=config,
        tokenizer=tokenizer,
        generation_defaults={k: gen[k] for k in GENERATION_KEYS if gen.get(k) is not None},
        eos_token_ids=_eos_ids(gen.get("eos_token_id"), config.eos_token_id, getattr(tokenizer, "eos_token_id", None)),
        max_model_len=_max_model_len(config),
        _weights=lambda _: _progress(_dir_weights(folder), _count_dir_tensors(folder) or 0),
    )


def _open_gguf(file: Path, quantization: str | None) -> Checkpoint:
    check_quantization(quantization, "gguf", str(file))
    shards = gguf_shards(file)
    file = shards[0]  # metadata (config, tokenizer) lives in the first shard
    # GGUFFile reads metadata and the tensor table only (milliseconds); the weights reopen the files
    gguf = GGUFFile(file)
    template = gguf.field("tokenizer.chat_template")
    declared = int(gguf.field("split.count", 1))
    block_count = gguf.field(f"{gguf.architecture}.block_count")
    num_tensors = gguf.field("split.tensors.count") or gguf.num_tensors()
    del gguf
    quantized = any(GGUFFile(shard).is_quantized() for shard in shards)
    if declared != len(shards):
        raise ValueError(f"{file.name} says its checkpoint has {declared} shards, but its name says {len(shards)}.")
    for shard in shards:
        GGUFFile(shard).check_tensor_types()
    import_config_validators()  # before any config class: skips ~70 MiB of model-loading imports
    config = gguf_config(str(file))
    _fill_architectures(config)
    try:
        tokenizer = gguf_tokenizer(str(file), config)
    except Exception as err:  # noqa: BLE001 - transformers raises anything on metadata it cannot use
        log.warning("No tokenizer loaded from %s: %s", file, err)
        tokenizer = None
    if tokenizer is not None and template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template
    files = [str(s) for s in shards]
    layers = int(block_count) if block_count else None
    return Checkpoint(
        path=str(file),
        hf_config=config,
        tokenizer=tokenizer,
        generation_defaults={},
        eos_token_ids=_eos_ids(config.eos_token_id, getattr(tokenizer, "eos_token_id", None)),
        max_model_len=_max_model_len(config),
        _weights=lambda q: _progress(gguf_tensors(files, config, layers, quantized=q), int(num_tensors)),
        stored_format="gguf" if quantized else None,
    )


def _gguf_sets(folder: Path) -> list[Path]:
    """The GGUF checkpoints in ``folder``: single files, and the first shard of each split set."""
    firsts = {gguf_shards(g)[0] if "-of-" in g.name else g for g in folder.glob("*.gguf")}
    return sorted(firsts)


def load_checkpoint(model: str | None, quantization: str | None = None) -> Checkpoint:
    """Open ``model`` (see :func:`heron.loader.resolve_model`): an HF directory with config.json
    and safetensors, a ``.gguf`` file (any shard of a split set), or a directory holding exactly
    one GGUF checkpoint (a single file or one split set).

    Args:
        model: the checkpoint (None = the bundled default model).
        quantization: the method the operator expects (``--quantization``): ``"gguf"``, or None
            for whatever the checkpoint holds.

    Raises:
        ModelNotFoundError: ``model`` cannot be found locally.
        ValueError: the path is not a checkpoint heron can read, it is quantized in a way heron
            cannot run, or ``quantization`` is not a method heron has or the checkpoint holds.
    """
    path = Path(resolve_model(model))
    if path.is_file() and path.suffix == ".gguf":
        return _open_gguf(path, quantization)
    if path.is_dir() and (path / "config.json").is_file():
        return _open_dir(path, quantization)
    ggufs = _gguf_sets(path) if path.is_dir() else []
    if len(ggufs) == 1:
        return _open_gguf(ggufs[0], quantization)
    raise ValueError(
        f"{path} is not a checkpoint heron can read: give a directory with config.json and "
        "*.safetensors, or one .gguf checkpoint" + (f" (found several: {[g.name for g in ggufs]})" if ggufs else "")
        + "."
    )
