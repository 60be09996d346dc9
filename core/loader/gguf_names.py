"""Map llama.cpp tensor names (``blk.N.attn_q.weight``) to transformers names and values, any architecture.

The names come from the ``gguf`` package's own HF-to-GGUF tables (``gguf.TensorNameMap``, the
ones llama.cpp's converter uses), inverted over the parameter names of the transformers model the
config describes (built on the meta device, so nothing is allocated): every family the ``gguf``
package knows maps, with no hand-written table. Mixture-of-experts layers are stored stacked in
GGUF (``blk.N.ffn_gate_exps.weight``: [experts, intermediate, hidden]); they map to the per-expert
names of an HF checkpoint on disk (``model.layers.N.mlp.experts.E.gate_proj.weight``).
:class:`ConverterFixups` then undoes what the converter changed, as transformers' GGUF loader
does: the q/k row permutation of the converters derived from its ``LlamaModel``, the ``+1``
stored into Gemma-style ``x * (1 + w)`` norm weights, GPT-2's transposed Conv1D weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = (
    "PERMUTED_ARCHS",
    "PLUS_ONE_NORM_ARCHS",
    "TRANSPOSED",
    "ConverterFixups",
    "GGUFNameMap",
    "gguf_model_arch",
    "unpermute_qk",
)

log = logging.getLogger(__name__)

#: transformers model types whose GGUF architecture is spelled differently
_GGUF_ARCH_OF_MODEL_TYPE = {
    "cohere": "command-r",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "gemma3_text": "gemma3",
    "gpt_oss": "gpt-oss",
    "minimax_m2": "minimax-m2",
}
_SUFFIX_RE = re.compile(r"^(.*?)((?:\.weight|\.bias)?)$")


def gguf_model_arch(arch: str) -> Any:
    """The ``gguf.MODEL_ARCH`` of a GGUF ``general.architecture`` (or transformers model type).

    Raises:
        ValueError: the installed ``gguf`` package does not know the architecture.
    """
    from gguf import MODEL_ARCH_NAMES

    name = _GGUF_ARCH_OF_MODEL_TYPE.get(arch, arch)
    for key, value in MODEL_ARCH_NAMES.items():
        if value == name:
            return key
    raise ValueError(f"The gguf package does not know the architecture {arch!r}; upgrade it (pip install -U gguf).")


def _split_suffix(name: str) -> tuple[str, str]:
    m = _SUFFIX_RE.match(name)
    assert m is not None
    return m.group(1), m.group(2)


def _fallback_rank(hf_key: str) -> int:
    """Without the model's own names, prefer the spelling most transformers causal LMs use."""
    if hf_key in ("model.embed_tokens", "model.norm", "lm_head") or hf_key.startswith("model.layers."):
        return 0
    return 1 if hf_key.startswith("model.") else 2


#: builds the transformers model for a config on the meta device in a child process and prints its
#: state-dict names and shapes: importing transformers' modeling code (torch._dynamo, triton, scipy)
#: costs a serving process about 200 MB that it would never give back
_SKELETON_SCRIPT = """
import json, sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging
logging.set_verbosity_error()
config = AutoConfig.for_model(**json.loads(sys.stdin.read()))
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config)
print(json.dumps({name: list(t.shape) for name, t in model.state_dict().items()}))
"""


def _skeleton_here(config: Any) -> dict[str, tuple[int, ...]]:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        hf_logging.set_verbosity(verbosity)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "heron" / "gguf-names"


def _skeleton_names(config: Any) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the transformers causal LM for ``config`` (meta device), from a
    child process, cached on disk by the config's contents (``~/.cache/heron/gguf-names``)."""
    if "transformers.modeling_utils" in sys.modules:  # already paid for (tests, the transformers fallback)
        return _skeleton_here(config)
    text = config.to_json_string(use_diff=False)
    cached = _cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"
    try:
        found = json.loads(cached.read_text())
    except (OSError, ValueError):
        done = subprocess.run([sys.executable, "-c", _SKELETON_SCRIPT], input=text, capture_output=True, text=True,
                              timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1]) from None
        found = json.loads(done.stdout.strip().splitlines()[-1])
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(found))
            tmp.replace(cached)
        except OSError:  # a read-only home: the next load asks the child again
            pass
    return {name: tuple(shape) for name, shape in found.items()}


class GGUFNameMap:
    """GGUF tensor name -> transformers name for one architecture and one model's parameter names.

    Args:
        arch: the GGUF ``general.architecture`` (e.g. ``"gemma3"``).
        num_layers: the block count.
        hf_names: the transformers model's state-dict names (with shapes, used to reshape tensors
            llama.cpp flattened); None = pick, for each GGUF name, the first HF name the ``gguf``
            tables list (a fallback for models transformers cannot build).
    """

    def __init__(self, arch: str, num_layers: int, hf_names: dict[str, tuple[int, ...]] | None) -> None:
        from gguf import MODEL_TENSOR, get_tensor_name_map

        self.table = get_tensor_name_map(gguf_model_arch(arch), num_layers)
        self.shapes = dict(hf_names or {})
        self.to_hf: dict[str, str] = {}
        self.skipped = {"rope_freqs", "rope_factors_long", "rope_factors_short"}  # recomputed from the config
        self._experts = {MODEL_TENSOR.FFN_GATE_EXP, MODEL_TENSOR.FFN_UP_EXP, MODEL_TENSOR.FFN_DOWN_EXP}
        self._candidates: dict[str, list[str]] = {}
        for hf_key, (_, gguf_key) in self.table.mapping.items():
            if hf_key != gguf_key:
                self._candidates.setdefault(gguf_key, []).append(hf_key)
        if hf_names is None:
            for gguf_key, keys in self._candidates.items():
                best = min(keys, key=_fallback_rank)
                for suffix in (".weight", ".bias"):
                    self.to_hf[gguf_key + suffix] = best + suffix
        else:
            self._invert(hf_names)
        self._prefixes = {n.rsplit(".", i)[0] for n in self.shapes for i in range(1, n.count(".") + 1)}

    @classmethod
    def for_config(cls, arch: str, config: Any, num_layers: int | None = None) -> GGUFNameMap:
        """The map for ``config``'s transformers model (falls back to the tables alone when
        transformers cannot build it)."""
        layers = num_layers or config.num_hidden_layers
        try:
            names: dict[str, tuple[int, ...]] | None = _skeleton_names(config)
        except Exception as err:  # noqa: BLE001 - any failure to build only loses the fallback precision
            log.warning("transformers cannot build %s (%s); GGUF names map by the gguf tables alone.", arch, err)
            names = None
        return cls(arch, layers, names)

    def _invert(self, hf_names: Iterable[str]) -> None:
        for hf in hf_names:
            base, suffix = _split_suffix(hf)
            parts = base.split(".")
            # like transformers' loader, also try the names inside sub-modules (``transformer.h.0``
            # -> ``h.0``): some tables list one spelling only
            for start in range(len(parts)):
                gguf = self.table.get_name(".".join(parts[start:]))
                if gguf is not None:
                    self.to_hf.setdefault(gguf + suffix, hf)
                    break

    def hf_name(self, gguf_name: str) -> str | None:
        """The transformers name of ``gguf_name``; None for tensors heron recomputes. Names the
        tables do not know come back unchanged (the model's ``load_weights`` names what it lacks)."""
        base, suffix = _split_suffix(gguf_name)
        if base in self.skipped:
            return None
        if gguf_name not in self.to_hf and suffix == ".bias" and base + ".weight" in self.to_hf:
            # a bias the config does not declare (GGUF metadata has no attention_bias): name it
            # after its weight, so the model says it has no such parameter rather than a GGUF name
            return self.to_hf[base + ".weight"].removesuffix(".weight") + ".bias"
        return self.to_hf.get(gguf_name, gguf_name)

    def expert_names(self, gguf_name: str, num_experts: int) -> list[str] | None:
        """Per-expert transformers names for a stacked expert tensor (``blk.N.ffn_up_exps.weight``),
        or None when ``gguf_name`` is not one."""
        base, suffix = _split_suffix(gguf_name)
        if self.table.get_type(base) not in self._experts:
            return None
        keys = self._candidates.get(base, [])
        # the spelling whose parent module (``model.layers.N.mlp.experts``) the model has
        key = next((k for k in keys if k.rsplit(".", 1)[0] in self._prefixes), keys[0] if keys else None)
        if key is None:
            return None
        parent, leaf = key.rsplit(".", 1)
        return [f"{parent}.{e}.{leaf}{suffix or '.weight'}" for e in range(num_experts)]

    def shape(self, hf_name: str) -> tuple[int, ...] | None:
        """The parameter shape the transformers model has for ``hf_name`` (None when unknown)."""
        return self.shapes.get(hf_name)


#: GGUF architectures whose q/k rows llama.cpp's converter permuted (``LlamaModel`` and the
#: converters inheriting its ``undo_permute``; OLMo 1 permutes on its own)
PERMUTED_ARCHS = frozenset({"llama", "granite", "granitemoe", "smollm3", "arcee", "olmo"})
#: GGUF architectures whose norm weights llama.cpp stored as ``w + 1``
PLUS_ONE_NORM_ARCHS = frozenset({"gemma", "gemma2", "gemma3", "nemotron"})
#: GGUF tensors llama.cpp transposed from transformers' Conv1D layout, per architecture
TRANSPOSED = {"gpt2": ("attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight")}


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation.

    llama.cpp stored each head's rows as ``reshape(heads, 2, half, ...).swapaxes(1, 2)``; this
    applies the inverse. ``weight``: [heads * head_size, ...] (a weight matrix or a bias).
    """
    rows = weight.shape[0]
    half = rows // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


class ConverterFixups:
    """Undoes what llama.cpp's converter did to one architecture's tensors (as transformers does).

    Args:
        arch: the GGUF ``general.architecture``.
        config: the transformers config (head counts for the q/k un-permutation).
    """

    def __init__(self, arch: str, config: Any) -> None:
        self.permuted = arch in PERMUTED_ARCHS
        self.plus_one = arch in PLUS_ONE_NORM_ARCHS
        self.transposed = TRANSPOSED.get(arch, ())
        self.heads = getattr(config, "num_attention_heads", None)
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads

    def __call__(self, gguf_name: str, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (dequantized, named ``gguf_name``) as transformers stores it."""
        if self.permuted and ".attn_q." in gguf_name:
            tensor = unpermute_qk(tensor, self.heads)
        elif self.permuted and ".attn_k." in gguf_name:
            tensor = unpermute_qk(tensor, self.kv_heads)
        if self.plus_one and gguf_name.endswith("norm.weight"):
            tensor = tensor - 1
        if self.transposed and gguf_name.endswith(self.transposed):
            tensor = tensor.T.contiguous()
        return tensor
