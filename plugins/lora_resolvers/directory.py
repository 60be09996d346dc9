"""``directory``: serve ``<--lora-resolver-dir>/<name>`` when a request names an adapter not loaded.

The name comes from a client, so it is confined: only plain adapter names reach this resolver
(the server refuses others), and the folder must really lie inside the directory once symlinks
are resolved (``heron.lora.confine``), its adapter files too. Without ``--lora-resolver-dir`` it
finds nothing. vLLM ships the same idea as its filesystem resolver.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from heron.interfaces.lora_resolver import LoRAResolver

__all__ = ("DirectoryResolver",)


class DirectoryResolver(LoRAResolver):
    """Adapters as sub-folders of one directory: ``<dir>/<name>/adapter_config.json``."""

    priority = 0

    async def resolve(self, base_model_name: str, lora_name: str) -> Any:
        root = getattr(self.settings, "lora_resolver_dir", None)
        if not root:
            return None
        folder = await asyncio.to_thread(_find, root, lora_name)
        if folder is None:
            return None
        from heron.lora import LoRARequest

        return LoRARequest(lora_name, 0, str(folder), base_model_name=base_model_name)


def _find(root: str, name: str) -> Path | None:
    """The real folder of adapter ``name`` inside ``root``, or None (also for any escape)."""
    from heron.lora import LoRAError, confine, safe_adapter_name

    if not safe_adapter_name(name) or not (Path(root) / name).is_dir():
        return None
    try:
        folder = confine(name, [root])
    except LoRAError:
        return None
    return folder if (folder / "adapter_config.json").is_file() else None
