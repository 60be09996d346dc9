"""Import transformers' config classes without the model-loading machinery they drag in.

transformers 5 config classes (``LlamaConfig`` ...) import ``transformers.utils.type_validators``, which
imports ``transformers.activations`` only to list the activation names ``hidden_act`` may take; that
module pulls in the hub-kernel, weight-conversion and tensor-parallel loading code, and through them
``torch.distributed.tensor``, sympy and accelerate: ~1,000 modules and 60-80 MiB resident that a
server reading a config and running heron's own model never uses. :func:`import_config_validators`
imports the validators first with an empty activation table in place of ``transformers.activations``
(transformers itself then skips that one check, as it does without torch) and removes the placeholder,
so code that imports ``transformers.activations`` later (the transformers model fallback, tests) gets
the real module. heron's models check their activation names themselves.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ("import_config_validators",)

_ACTIVATIONS = "transformers.activations"
_VALIDATORS = "transformers.utils.type_validators"


def import_config_validators() -> None:
    """Import ``transformers.utils.type_validators`` without ``transformers.activations`` (once; a
    no-op when either is already imported or this transformers has no such module)."""
    if _VALIDATORS in sys.modules or _ACTIVATIONS in sys.modules:
        return
    placeholder = types.ModuleType(_ACTIVATIONS, "heron's stand-in while importing the config validators")
    placeholder.ACT2FN = {}  # type: ignore[attr-defined]  # empty: transformers skips the name check
    sys.modules[_ACTIVATIONS] = placeholder
    try:
        importlib.import_module(_VALIDATORS)
    except ImportError:  # another transformers layout: its config classes import what they need
        pass
    finally:
        if sys.modules.get(_ACTIVATIONS) is placeholder:
            del sys.modules[_ACTIVATIONS]
