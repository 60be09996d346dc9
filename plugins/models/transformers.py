"""The transformers fallback: any decoder built into transformers, its attention run by heron's paged backend.

transformers' own ``AutoModelForCausalLM.from_config`` builds the model (built-in classes only, never remote code)
with its attention implementation set to ``"heron"``: a function registered in transformers' AttentionInterface
that hands q/k/v to a :class:`heron.layers.Attention` attached to each HF attention module, so the engine binds
the KV cache and the backend as for any plugin. The matching mask function returns None: the backend masks from
the step's block tables and no O(T^2) mask is built. The step's ForwardBatch reaches the attention function
through a small per-model :class:`_Step` object. ``compute_logits`` runs the HF causal-LM head code (final soft
cap, logit scaling) on the given hidden states by making the base model pass them through for that call.
Limits: models whose attention bypasses the interface (e.g. Falcon), recurrent/linear-attention layers and
checkpoints whose names need transformers' weight converters (fused MoE experts) are refused with an error.
It does not split over tensor-parallel ranks (transformers' modules hold whole weights): it declares
``supports_tensor_parallel = False`` and refuses ``ctx.tp_size > 1`` itself too, naming the way out.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from heron.interfaces import CausalLM, ForwardBatch, ModelContext
from heron.layers import Attention

__all__ = ("TransformersForCausalLM",)

#: the attn_implementation / mask-interface key heron registers in transformers
ATTN_IMPL = "heron"
_ATTENTION_LAYER_TYPES = {"full_attention", "sliding_attention"}
_ALWAYS_IGNORED = (r"rotary_emb\.inv_freq$",)


class _Step:
    """Per-forward state shared by the model and its attention modules (set only while a forward runs)."""

    __slots__ = ("batch", "calls", "head_input", "probe")

    def __init__(self) -> None:
        self.batch: ForwardBatch | None = None
        self.calls = 0
        self.head_input: torch.Tensor | None = None  # [n, hidden] while compute_logits runs the HF head
        self.probe: dict[nn.Module, dict[str, Any]] | None = None  # filled by the shape probe at build time


def _heron_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                     sliding_window: int | None = None, softcap: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature over heron's paged attention.

    Args:
        query: [1, H, T, D]; key, value: [1, KVH, T, D] (rotary already applied by the HF module).
    Returns:
        ([1, T, H, D], None)
    """
    step: _Step | None = getattr(module, "_heron_step", None)
    if step is None:
        raise RuntimeError(f"{type(module).__name__} uses attn_implementation={ATTN_IMPL!r} outside heron's fallback.")
    t = query.shape[2]
    if step.probe is not None:  # build time: record what transformers hands over, compute nothing
        step.probe[module] = {"heads": query.shape[1], "kv_heads": key.shape[1], "head_size": query.shape[-1],
                              "scale": scaling, "sliding_window": sliding_window, "soft_cap": softcap}
        return query.new_zeros(1, t, query.shape[1], value.shape[-1]), None
    layer: Attention = module.heron_attn
    if sliding_window != layer.sliding_window and sliding_window is not None:
        raise RuntimeError(f"{type(module).__name__} (layer {layer.layer_idx}) asks for a sliding window of "
                           f"{sliding_window}, but heron bound {layer.sliding_window}.")
    q = query[0].transpose(0, 1).contiguous()  # [T, H, D]
    k = key[0].transpose(0, 1).contiguous()  # [T, KVH, D]
    v = value[0].transpose(0, 1).contiguous()
    step.calls += 1
    out = layer(q, k, v, step.batch)  # [T, H * D]
    return out.view(1, t, layer.num_heads, layer.head_size), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """The backend masks from block tables and sequence lengths: transformers builds no mask."""
    return None


@functools.cache
def _register_with_transformers() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPL, _heron_attention)
    AttentionMaskInterface.register(ATTN_IMPL, _no_mask)


@functools.cache
def _uses_interface(obj: Any) -> bool:
    """Whether the source of ``obj`` (a class or module) dispatches through transformers' AttentionInterface."""
    try:
        return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(obj)
    except (OSError, TypeError):
        return False


def _check_supported(config: Any) -> None:
    """Refuse, before building, what the fallback cannot run: attention outside the interface, non-attention mixers."""
    import sys

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    cls = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if cls is None:
        raise ValueError(f"transformers has no built-in causal-LM class for {arch} (model_type {config.model_type!r}).")
    if not (cls.is_backend_compatible() or _uses_interface(sys.modules[cls.__module__])):
        raise ValueError(f"{cls.__name__} computes attention itself instead of through transformers' "
                         "AttentionInterface, so the transformers fallback cannot run it; it needs a heron plugin.")
    types = set(getattr(config, "layer_types", None) or ()) - _ATTENTION_LAYER_TYPES
    if types:
        raise ValueError(f"The transformers fallback serves attention-only decoders; {arch} has "
                         f"{', '.join(sorted(types))} layers.")


def _heron_layer(module: nn.Module, config: Any, index: int, seen: dict[str, Any]) -> Attention:
    """The heron layer for one HF attention module: shapes and kwargs as the probe saw them, else module attributes."""
    window = seen["sliding_window"]
    if window is None and hasattr(module, "sliding_window"):
        window = module.sliding_window
    cap = seen["soft_cap"] or getattr(module, "attn_logit_softcapping", None)
    cap = cap or getattr(config, "attn_logit_softcapping", None)
    scale = seen["scale"] or getattr(module, "scaling", None) or seen["head_size"] ** -0.5
    return Attention(seen["heads"], seen["kv_heads"], seen["head_size"], float(scale), index,
                     sliding_window=window, logits_soft_cap=cap)


def _checkpoint_renamer(hf: nn.Module) -> Any:
    """Checkpoint name -> module name, with transformers' own renamings (e.g. GPT-NeoX ``embed_out.`` -> ``lm_head.``)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightRenaming,
            apply_converters,
            apply_renamings,
        )
    except ImportError:  # transformers before 5: checkpoints carry the module names
        return lambda name: name
    transforms = get_model_conversion_mapping(hf)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]

    def rename(name: str) -> str:
        renamed = apply_renamings(name, renamings)
        if apply_converters(renamed, converters)[1] is not None:
            raise ValueError(f"Checkpoint tensor {name!r} needs a transformers weight converter (e.g. fused experts), "
                             "which the transformers fallback does not run.")
        return renamed

    return rename


class TransformersForCausalLM(nn.Module, CausalLM):
    """A transformers-built causal LM whose attention layers compute through heron's paged attention."""

    #: transformers' modules hold whole weights: no tensor-parallel split (the engine refuses tp > 1)
    supports_tensor_parallel = False

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        if getattr(ctx, "tp_size", 1) > 1:
            arch = (getattr(config, "architectures", None) or [config.model_type])[0]
            raise ValueError(f"The transformers fallback cannot split {arch} over {ctx.tp_size} tensor-parallel ranks; "
                             "serve it with --tensor-parallel-size 1, or use a model heron implements natively.")
        _register_with_transformers()
        _check_supported(config)
        self.hf = AutoModelForCausalLM.from_config(config, attn_implementation=ATTN_IMPL, dtype=ctx.dtype,
                                                   trust_remote_code=False)
        self._step = _Step()
        base = self.hf.base_model
        base.forward = functools.partial(self._base_forward, base.forward)  # instance attribute: this model only
        self._attach_attention(config)

    def _attach_attention(self, config: Any) -> None:
        """Give every HF attention module a heron layer, sized by one probe forward over two tokens."""
        modules = [m for m in self.hf.modules() if _uses_interface(type(m).forward)]
        for module in modules:
            module._heron_step = self._step
        self._step.probe = {}
        try:
            with torch.no_grad():  # not inference_mode: buffers HF updates in place must stay normal tensors
                device = next(self.hf.parameters()).device
                ids = torch.zeros(1, 2, dtype=torch.long, device=device)
                out = self.hf.base_model(input_ids=ids, position_ids=torch.arange(2, device=device)[None],
                                         use_cache=False)
            self._output_type = type(out)  # what compute_logits' pass-through returns to the HF head code
            seen = self._step.probe
        finally:
            self._step.probe = None
        silent = sorted({type(m).__name__ for m in modules if m not in seen})
        if silent or not seen:
            raise ValueError(f"{type(self.hf).__name__}: {', '.join(silent) or 'no module'} ran attention outside "
                             "transformers' AttentionInterface; the transformers fallback cannot run it.")
        for i, module in enumerate(modules):
            index = getattr(module, "layer_idx", None)
            module.heron_attn = _heron_layer(module, config, i if index is None else index, seen[module])
        self.num_attention_layers = len(modules)

    def _base_forward(self, original: Any, *args: Any, **kwargs: Any) -> Any:
        if self._step.head_input is None:
            return original(*args, **kwargs)
        return self._output_type(last_hidden_state=self._step.head_input[None])  # [1, n, hidden]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """[T] ids, [T] positions -> [T, hidden] (final norm applied, before the LM head)."""
        self._step.batch, self._step.calls = batch, 0
        try:
            out = self.hf.base_model(input_ids=input_ids[None], position_ids=positions[None], use_cache=False)
        finally:
            self._step.batch = None
        if self._step.calls != self.num_attention_layers:
            raise RuntimeError(f"{type(self.hf).__name__} ran {self._step.calls} of its {self.num_attention_layers} "
                               "attention layers through heron; some attention bypasses transformers' interface.")
        return out[0][0]

    def lora_target(self, name: str) -> tuple[str, tuple[int, int] | None]:
        """PEFT names the HF model's own modules; here they sit under ``hf.``."""
        return f"hf.{name}", None

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[n, hidden] -> [n, vocab] float32, through the HF model's own head (soft cap, logit scaling)."""
        self._step.head_input = hidden_states
        try:
            out = self.hf(input_ids=torch.zeros(1, hidden_states.shape[0], dtype=torch.long,
                                                device=hidden_states.device), use_cache=False)
        finally:
            self._step.head_input = None
        return out.logits[0].float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the HF module (tied tensors once); every parameter must be set."""
        targets = {**dict(self.hf.named_buffers()), **dict(self.hf.named_parameters(remove_duplicate=False))}
        missing = {id(p): n for n, p in self.hf.named_parameters()}  # tied parameters appear once
        ignored = [re.compile(p) for p in (*(self.hf._keys_to_ignore_on_load_unexpected or ()), *_ALWAYS_IGNORED)]
        rename = _checkpoint_renamer(self.hf)
        for name, tensor in weights:
            target = targets.get(rename(name))
            if target is None:
                if any(p.search(name) for p in ignored):
                    continue
                raise KeyError(f"Checkpoint tensor {name!r} has no matching parameter in {type(self.hf).__name__}.")
            with torch.no_grad():
                target.copy_(tensor.view_as(target))
            missing.pop(id(target), None)
        if missing:
            raise ValueError(f"The checkpoint lacks tensors for: {', '.join(sorted(missing.values()))}.")
