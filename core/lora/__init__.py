"""Multi-LoRA serving: PEFT adapters over one base model, many adapters and the base in one batch.

:class:`LoRARequest` names an adapter (vLLM's fields), :func:`confine` / :func:`safe_adapter_name`
keep untrusted paths inside allowed directories, :func:`load_adapter` parses a PEFT checkpoint
onto a heron model, :class:`LoRAManager` registers adapters, keeps up to ``max_loras`` of them in
serving slots (LRU) and prepares each step, and :class:`LoRALinear` adds every token's adapter
delta with two batched matmuls per projection. Under tensor parallelism :mod:`heron.lora.sharding`
cuts each adapter to the rank's slice of every projection.
"""

from heron.lora.adapter import LoRAAdapter, LoRAShard, load_adapter
from heron.lora.layers import LoRALinear, LoRAStepState
from heron.lora.manager import LoRAManager
from heron.lora.paths import confine, safe_adapter_name
from heron.lora.request import LoRAError, LoRARequest

__all__ = (
    "LoRAAdapter",
    "LoRAError",
    "LoRALinear",
    "LoRAManager",
    "LoRARequest",
    "LoRAShard",
    "LoRAStepState",
    "confine",
    "load_adapter",
    "safe_adapter_name",
)
