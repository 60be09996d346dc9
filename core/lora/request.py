"""What names a LoRA adapter (:class:`LoRARequest`, vLLM's fields and order) and the error a bad one raises.

A request carries the adapter's public name (what a client puts in ``model``), an integer id
the caller chooses, the folder holding the PEFT checkpoint and, optionally, the base model it
was trained on. :class:`LoRAError` is a ``ValueError`` whose message says what is wrong and in
which file or module, so the server can hand it to the client as a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("LoRAError", "LoRARequest")


@dataclass(frozen=True)
class LoRARequest:
    """One LoRA adapter, as vLLM's ``LoRARequest(lora_name, lora_int_id, lora_path)``.

    Attributes:
        lora_name: the adapter's name (what a request's ``model`` says to select it).
        lora_int_id: an integer id chosen by the caller (vLLM requires it positive).
        lora_path: the folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``).
        base_model_name: the base model the adapter was trained on (informative; shown as ``parent``).
    """

    lora_name: str
    lora_int_id: int
    lora_path: str
    base_model_name: str | None = None

    @property
    def name(self) -> str:
        """vLLM alias of :attr:`lora_name`."""
        return self.lora_name

    @property
    def path(self) -> str:
        """vLLM alias of :attr:`lora_path`."""
        return self.lora_path

    @property
    def adapter_id(self) -> int:
        """vLLM alias of :attr:`lora_int_id`."""
        return self.lora_int_id


class LoRAError(ValueError):
    """An adapter that cannot be used: the message names the problem and its file or module.

    Args:
        message: what went wrong, in one sentence.
        param: the request field at fault (e.g. ``"lora_path"``), when one is.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
