"""The LoRA-resolver contract: find an adapter a request names but the server has not loaded.

Resolvers are plugins of the ``heron.lora_resolvers`` entry-point group. With ``--enable-lora``,
when a request's ``model`` is neither a served model name nor a registered adapter, the server asks
every installed resolver in order, ``priority`` first (higher first), then entry name
(alphabetically); the first one that returns a :class:`heron.lora.LoRARequest` wins, its adapter
is loaded and the request runs through it. Only names made of ``[A-Za-z0-9._-]`` (and not ``.``
or ``..``) ever reach a resolver. The built-in ``directory`` resolver serves ``<dir>/<name>``
for ``--lora-resolver-dir DIR``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heron.lora import LoRARequest

__all__ = ("LoRAResolver",)


class LoRAResolver(ABC):
    """Finds LoRA adapters by name (a folder, an object store, a registry of fine-tunes, ...).

    Built once per server as ``cls(settings)``. :meth:`resolve` runs on the server's event loop:
    blocking I/O (downloads, disk scans) belongs in a thread (``asyncio.to_thread``). It may be
    called concurrently for different names. The server gives the returned request a fresh
    ``lora_int_id`` and the asked-for name, and loads it; a resolver that raises is logged and
    skipped.

    Attributes:
        priority: resolvers with a higher priority are asked first (ties: by entry name).
    """

    priority: int = 0

    def __init__(self, settings: Any) -> None:
        """Keep ``settings`` (the server's ``ServerSettings``): read your configuration from it."""
        self.settings = settings

    @abstractmethod
    async def resolve(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        """The adapter called ``lora_name`` for the served model ``base_model_name``.

        Args:
            base_model_name: the server's (first) served model name.
            lora_name: what the request sent as ``model``.

        Returns:
            ``LoRARequest(lora_name, 0, local_folder)`` naming a folder with ``adapter_config.json``
            and ``adapter_model.safetensors`` (or ``.bin``) on this machine, or ``None`` when this
            resolver does not know the name.
        """
