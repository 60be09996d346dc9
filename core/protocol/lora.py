"""Bodies of vLLM's runtime adapter routes: ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``.

Both routes answer 200 with plain text (vLLM's sentences) and OpenAI-shaped JSON errors; they
exist only when runtime updating is allowed (``--allow-runtime-lora-updating`` or
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=true``).
"""

from __future__ import annotations

from pydantic import Field

from heron.protocol.common import OpenAIModel

__all__ = ("LoadLoRAAdapterRequest", "UnloadLoRAAdapterRequest")


class LoadLoRAAdapterRequest(OpenAIModel):
    """Load a PEFT adapter folder under a name requests then send as ``model``."""

    lora_name: str = Field(description="The name requests use as 'model' (letters, digits, '.', '_', '-').")
    lora_path: str = Field(description="The adapter folder, inside one of --allowed-lora-dirs (or relative to "
                                       "the first of them).")


class UnloadLoRAAdapterRequest(OpenAIModel):
    """Forget a loaded adapter; requests already running with it finish first."""

    lora_name: str = Field(description="The adapter's name.")
    lora_int_id: int | None = Field(default=None, description="Accepted for vLLM clients; the name decides.")
