"""Decide how a checkpoint is served: the runner (generate or pooling), the conversion (embed or
classify) and the pooling settings, from the checkpoint and the operator's flags.

``--runner auto`` serves a checkpoint as a pooling model when it is a sentence-transformers folder
(``modules.json``), a ``*ForSequenceClassification`` classifier or a bare encoder (``BertModel``,
``XLMRobertaModel``, ... ``*Model`` without an LM head); anything else generates text.
``--convert auto`` then picks ``classify`` for classifiers and ``embed`` otherwise. The pooling type
comes from sentence-transformers' ``1_Pooling/config.json`` (CLS, MEAN or LAST token), else
the default for the model kind (LAST for decoders, CLS for encoders); normalisation from a
``Normalize`` module in ``modules.json`` (embedding models normalise by default otherwise);
the longest input from ``sentence_bert_config.json``'s ``max_seq_length``; Matryoshka dimensions
from the config's ``matryoshka_dimensions`` / ``is_matryoshka``. ``--pooler-config`` (JSON)
overrides any of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ("CONVERTS", "POOLING_TYPES", "RUNNERS", "PoolerConfig", "resolve_pooler")

RUNNERS = ("auto", "generate", "pooling")
CONVERTS = ("auto", "embed", "classify", "none")
POOLING_TYPES = ("LAST", "CLS", "MEAN", "ALL", "STEP")

#: sentence-transformers' pooling modes -> heron's pooling types (MAX and weighted-mean are not served)
_ST_MODES = {
    "pooling_mode_cls_token": "CLS",
    "pooling_mode_mean_tokens": "MEAN",
    "pooling_mode_lasttoken": "LAST",
}


@dataclass(slots=True)
class PoolerConfig:
    """How the engine serves a checkpoint (see the module docstring)."""

    runner: str  # "generate" or "pooling"
    convert: str = "none"  # "embed", "classify" or "none" (a generate runner)
    pooling_type: str | None = None  # one of POOLING_TYPES for embed/encode
    normalize: bool = True
    max_seq_length: int | None = None  # inputs are truncated to this many tokens by default
    matryoshka_dimensions: list[int] | None = None  # None: ``dimensions`` is refused; []: any size
    step_tag_id: int | None = None  # STEP pooling: the token whose rows are pooled
    why: str = ""  # one sentence for the log
    extra: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sentence_transformers(folder: Path) -> dict[str, Any] | None:
    """What a sentence-transformers folder says: pooling type, normalisation, max_seq_length."""
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list):
        return None
    found: dict[str, Any] = {"normalize": any("Normalize" in str(m.get("type", "")) for m in modules)}
    for module in modules:
        if "Pooling" in str(module.get("type", "")):
            pooling = _read_json(folder / str(module.get("path", "1_Pooling")) / "config.json") or {}
            modes = [heron for key, heron in _ST_MODES.items() if isinstance(pooling, dict) and pooling.get(key)]
            if modes:
                found["pooling_type"] = modes[0]
    bert = _read_json(folder / "sentence_bert_config.json")
    if isinstance(bert, dict) and isinstance(bert.get("max_seq_length"), int):
        found["max_seq_length"] = bert["max_seq_length"]
    return found


def _kind(arch: str) -> str:
    """classify, encoder or decoder, from the architecture name alone."""
    if arch.endswith(("ForSequenceClassification", "ForTokenClassification")):
        return "classify"
    if arch.endswith("Model") and not arch.endswith(("LMHeadModel", "ForCausalLM")):
        return "encoder"
    return "decoder"


def resolve_pooler(
    checkpoint: Any,
    runner: str = "auto",
    convert: str = "auto",
    override: dict[str, Any] | None = None,
) -> PoolerConfig:
    """The serving decision for ``checkpoint`` given ``--runner``, ``--convert`` and ``--pooler-config``.

    Raises:
        ValueError: an unknown runner, conversion or pooling type, or an override key heron lacks.
    """
    if runner not in RUNNERS:
        raise ValueError(f"Unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}.")
    if convert not in CONVERTS:
        raise ValueError(f"Unknown convert {convert!r}; choose one of {', '.join(CONVERTS)}.")
    config = checkpoint.hf_config
    arch = (getattr(config, "architectures", None) or [""])[0]
    kind = _kind(arch)
    folder = Path(checkpoint.path)
    st = _sentence_transformers(folder) if folder.is_dir() else None
    if runner == "auto":
        runner = "pooling" if st is not None or kind != "decoder" or convert in ("embed", "classify") else "generate"
        why = ("a sentence-transformers folder" if st is not None else f"{arch} is a {kind}") + f": runner {runner}"
    else:
        why = f"--runner {runner}"
    if runner == "generate":
        if convert in ("embed", "classify"):
            raise ValueError(f"--convert {convert} needs --runner pooling (or auto), not generate.")
        return PoolerConfig("generate", why=why)
    if convert in ("auto", "none"):
        convert = "classify" if kind == "classify" else "embed"
    found = st or {}
    pooler = PoolerConfig(
        runner="pooling",
        convert=convert,
        pooling_type=found.get("pooling_type") or ("LAST" if kind == "decoder" else "CLS"),
        normalize=found.get("normalize", True) if st is not None else True,
        max_seq_length=found.get("max_seq_length"),
        matryoshka_dimensions=_matryoshka(config),
        why=f"{why}, convert {convert}",
    )
    return _apply_override(pooler, override or {})


def _matryoshka(config: Any) -> list[int] | None:
    dims = getattr(config, "matryoshka_dimensions", None)
    if dims:
        return [int(d) for d in dims]
    return [] if getattr(config, "is_matryoshka", False) else None


def _apply_override(pooler: PoolerConfig, override: dict[str, Any]) -> PoolerConfig:
    names = {f.name for f in fields(PoolerConfig)} - {"runner", "convert", "why", "extra"}
    unknown = sorted(set(override) - names)
    if unknown:
        raise ValueError(f"--pooler-config does not know {', '.join(unknown)}; it takes {', '.join(sorted(names))}.")
    for key, value in override.items():
        if key == "pooling_type":
            value = str(value).upper()
            if value not in POOLING_TYPES:
                raise ValueError(f"Unknown pooling_type {value!r}; choose one of {', '.join(POOLING_TYPES)}.")
        setattr(pooler, key, value)
    if override:
        pooler.why += f" (--pooler-config {json.dumps(override, sort_keys=True)})"
    return pooler
