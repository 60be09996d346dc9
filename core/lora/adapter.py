"""Read a PEFT LoRA checkpoint and map it onto a heron model (:func:`load_adapter`).

A PEFT folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or the pickled
``adapter_model.bin``) with one ``lora_A`` ``[r, in]`` and one ``lora_B`` ``[out, r]`` per
targeted module, named after the transformers module (``base_model.model.<module>.lora_A.weight``).
Each module name is mapped to heron's own module with the model's ``lora_target`` (heron fuses
q/k/v and gate/up, so a PEFT module may become a row range of a fused projection), shapes are
checked against that module, and ``B`` is multiplied by the module's scaling (``alpha / r``, or
``alpha / sqrt(r)`` with rsLoRA, ``rank_pattern`` / ``alpha_pattern`` honoured) so the serving
layers only compute ``x A^T B^T``. Options whose math heron does not implement are refused with a
:class:`LoRAError` rather than served wrong. Nothing here touches the model: any thread may call it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heron.lora.request import LoRAError, LoRARequest
from heron.lora.sharding import place_shard

__all__ = ("LoRAAdapter", "LoRAShard", "load_adapter")

#: (row range (first row, rows) inside a fused projection or None for all rows, A [r, in], B_scaled [rows, r])
LoRAShard = tuple[tuple[int, int] | None, torch.Tensor, torch.Tensor]

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_PREFIX = "base_model.model."
_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight")

# adapter_config.json key -> what it turns on (heron refuses every one of them when set)
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora)",
    "modules_to_save": "fully trained copies of base modules (modules_to_save)",
    "lora_bias": "a bias on lora_B (lora_bias)",
    "use_qalora": "QA-LoRA (use_qalora)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "trainable_token_indices": "trained embedding rows (trainable_token_indices)",
    "target_parameters": "LoRA on raw parameters such as fused MoE experts (target_parameters)",
    "layer_replication": "layer_replication",
    "use_bdlora": "BD-LoRA (use_bdlora)",
    "arrow_config": "Arrow routing (arrow_config)",
    "kasa_config": "KaSA (kasa_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
}


@dataclass(slots=True)
class LoRAAdapter:
    """A parsed PEFT adapter, ready to copy into serving slots (CPU tensors in the model dtype).

    Attributes:
        request: the request it was loaded for.
        rank: the largest rank of any of its modules.
        weights: heron module name -> its shards (one, or one per fused part such as q/k/v).
    """

    request: LoRARequest
    rank: int
    weights: dict[str, list[LoRAShard]] = field(default_factory=dict)

    def rank_needs(self) -> dict[str, int]:
        """Heron module name -> slot rank the adapter needs there (fused shards stack their ranks)."""
        return {name: sum(a.shape[0] for _, a, _ in shards) for name, shards in self.weights.items()}


def load_adapter(req: LoRARequest, model: nn.Module, *, max_rank: int, dtype: torch.dtype) -> LoRAAdapter:
    """Read, validate and map the PEFT adapter at ``req.lora_path`` onto ``model``.

    Raises:
        LoRAError: a missing or unreadable file, an unsupported option (DoRA, modules_to_save,
            bias, a LoRA variant, a peft_type other than LORA), a rank above ``max_rank``, LoRA
            on embeddings or the LM head, a target module heron's model lacks or that is not a
            linear layer, or shapes that do not fit it.
    """
    where = f"LoRA adapter {req.lora_name!r}"
    folder = Path(req.lora_path)
    if not folder.is_dir():
        raise LoRAError(f"{where}: {req.lora_path!r} is not a directory.", param="lora_path")
    config = _read_config(folder, where)
    _check_config(config, max_rank, where)
    tensors, source = _read_tensors(folder, where)
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    weights: dict[str, list[LoRAShard]] = {}
    for hf_name, (a, b) in _pair(tensors, f"{where} ({source})").items():
        where_module = f"{where}: module {hf_name!r} ({source})"
        r = int(_pattern(rank_pattern, hf_name, config.get("r", 8)))
        alpha = float(_pattern(alpha_pattern, hf_name, config.get("lora_alpha", 8)))
        if a.shape[0] != r or b.shape[1] != r:
            raise LoRAError(f"{where_module} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, "
                            f"not rank {r} as adapter_config.json says.")
        if r > max_rank:
            raise LoRAError(f"{where_module} has rank {r}, above --max-lora-rank {max_rank}.")
        target, rows = _target(model, hf_name, where_module)
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        # this rank's slice (all of it without tensor parallelism), shapes checked against the module
        rows, a, b = place_shard(model.get_submodule(target), rows, a, b, where_module)
        shard = (rows, a.to(dtype).contiguous(), (b.float() * scaling).to(dtype).contiguous())
        weights.setdefault(target, []).append(shard)
    for shards in weights.values():
        shards.sort(key=lambda shard: -1 if shard[0] is None else shard[0][0])  # fused parts in row order
    rank = max((a.shape[0] for shards in weights.values() for _, a, _ in shards), default=0)
    return LoRAAdapter(req, rank, weights)


def _read_config(folder: Path, where: str) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise LoRAError(f"{where}: {CONFIG_FILE} is missing in {str(folder)!r}.", param="lora_path")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoRAError(f"{where}: {CONFIG_FILE} cannot be read: {err}.") from err
    if not isinstance(config, dict):
        raise LoRAError(f"{where}: {CONFIG_FILE} is not a JSON object.")
    return config


def _check_config(config: dict[str, Any], max_rank: int, where: str) -> None:
    where = f"{where} ({CONFIG_FILE})"
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise LoRAError(f"{where} is a {peft_type} adapter; heron serves LoRA adapters only.")
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise LoRAError(f"{where} uses {what}, which heron does not support.")
    if config.get("bias", "none") != "none":
        raise LoRAError(f"{where} trains biases (bias={config['bias']!r}); heron supports bias='none' only.")
    ranks = [config.get("r", 8), *(config.get("rank_pattern") or {}).values()]
    alphas = [config.get("lora_alpha", 8), *(config.get("alpha_pattern") or {}).values()]
    if not all(isinstance(r, int) and r > 0 for r in ranks) or not all(isinstance(a, int | float) for a in alphas):
        raise LoRAError(f"{where}: r, lora_alpha, rank_pattern and alpha_pattern must be numbers (r positive).")
    if max(ranks) > max_rank:
        raise LoRAError(f"{where} has rank {max(ranks)}, above --max-lora-rank {max_rank}; raise it to serve this "
                        "adapter.")


def _read_tensors(folder: Path, where: str) -> tuple[dict[str, torch.Tensor], str]:
    """(tensor name -> CPU tensor, file name) of the first weight file present."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path), device="cpu"), name
            return torch.load(str(path), map_location="cpu", weights_only=True), name
        except Exception as err:  # a corrupt or hostile file: say which, never crash the engine
            raise LoRAError(f"{where}: {name} cannot be read: {err}.") from err
    raise LoRAError(f"{where}: neither {' nor '.join(WEIGHT_FILES)} is in {str(folder)!r}.", param="lora_path")


def _pair(tensors: dict[str, torch.Tensor], where: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """HF module name -> (lora_A [r, in], lora_B [out, r]); any other tensor is an error."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    problems: list[tuple[int, str]] = []  # (priority, message): the most telling one is raised
    for key, tensor in tensors.items():
        name = key.removeprefix(_PREFIX)
        match = _KEY.fullmatch(name)
        if "lora_embedding_" in name:
            problems.append((0, f"{key!r} puts LoRA on an embedding, which heron does not support"))
        elif "lora_magnitude_vector" in name:
            problems.append((0, f"{key!r} is a DoRA magnitude, which heron does not support"))
        elif "lm_head" in name.split("."):
            problems.append((1, f"{key!r}: LoRA on the LM head is not supported"))
        elif match is None or tensor.dim() != 2:
            problems.append((2, f"unexpected tensor {key!r} {tuple(tensor.shape)} (heron reads 2-D lora_A and "
                                "lora_B weights only)"))
        else:
            halves.setdefault(match["module"], {})[match["ab"]] = tensor
    if problems:
        raise LoRAError(f"{where}: {min(problems)[1]}.")
    if not halves:
        raise LoRAError(f"{where} holds no LoRA weights.")
    missing = sorted(f"{m}.lora_{ab}" for m, h in halves.items() for ab in "AB" if ab not in h)
    if missing:
        raise LoRAError(f"{where} lacks {', '.join(missing)}.")
    return {m: (h["A"], h["B"]) for m, h in halves.items()}


def _pattern(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """PEFT's rule: the first pattern key that matches the end of ``name`` at a dot boundary."""
    for key, value in patterns.items():
        try:
            if re.match(rf"(.*\.)?({key})$", name):
                return value
        except re.error as err:
            raise LoRAError(f"{CONFIG_FILE}: rank_pattern/alpha_pattern key {key!r} is not a valid pattern.") from err
    return default


def _target(model: nn.Module, hf_name: str, where: str) -> tuple[str, tuple[int, int] | None]:
    """(heron module name, row range) of HF module ``hf_name``; LoRAError when heron has no such module."""
    try:
        target, rows = model.lora_target(hf_name)
        model.get_submodule(target)
    except (AttributeError, IndexError, KeyError, ValueError) as err:
        raise LoRAError(f"{where}: {type(model).__name__} has no such module.") from err
    return target, rows

