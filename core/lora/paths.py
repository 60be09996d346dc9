"""Confine untrusted adapter paths and names to the directories an operator allowed.

Paths reaching :func:`confine` come from HTTP requests (``/v1/load_lora_adapter``) or from a
resolver that builds them out of a client-chosen name, so they are hostile until proven
otherwise: a ``..`` component is refused outright, the path is resolved (symlinks followed) and
must land inside one of the roots, and so must every ``adapter_*`` file inside it, so a symlink
placed in an allowed folder cannot read a file elsewhere. :func:`safe_adapter_name` is the
stricter check for a bare name that becomes one path component.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from heron.lora.request import LoRAError

__all__ = ("confine", "safe_adapter_name")

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def safe_adapter_name(name: str) -> bool:
    """Whether ``name`` can name an adapter folder: ``[A-Za-z0-9._-]``, 1-128 characters, not ``.`` or ``..``."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and name not in (".", "..")


def confine(path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]]) -> Path:
    """The real path of ``path`` if it lies inside one of ``roots`` after resolving symlinks.

    A relative ``path`` is taken relative to the first root. The adapter files in the folder
    (``adapter_config.json``, ``adapter_model.*``) must resolve inside the same root.

    Raises:
        LoRAError: no roots are configured, ``path`` has a ``..`` component, or it (or one of its
            adapter files) resolves outside every root.
    """
    text = os.fspath(path)
    if not text:
        raise LoRAError("The LoRA adapter path is empty.", param="lora_path")
    if ".." in re.split(r"[\\/]+", text):
        raise LoRAError(f"The LoRA adapter path {text!r} contains '..', which is not allowed.", param="lora_path")
    if not roots:
        raise LoRAError("Loading LoRA adapters from a path is disabled: no allowed directories are configured "
                        "(--allowed-lora-dirs).", param="lora_path")
    real_roots = [Path(root).resolve() for root in roots]
    given = Path(text)
    real = (given if given.is_absolute() else real_roots[0] / given).resolve()
    root = next((r for r in real_roots if real.is_relative_to(r)), None)
    if root is None:
        raise LoRAError(f"The LoRA adapter path {text!r} is outside the allowed directories.", param="lora_path")
    if real.is_dir():
        for child in sorted(real.iterdir()):
            if child.name.startswith("adapter_") and not child.resolve().is_relative_to(root):
                raise LoRAError(f"The LoRA adapter file {child.name!r} in {text!r} resolves outside the allowed "
                                "directories.", param="lora_path")
    return real
