"""Build the transformers config (and find the tokenizer class) of a GGUF file from its metadata.

transformers reads a GGUF config by parsing the whole file with ``gguf.GGUFReader`` (one numpy
view per vocabulary entry: ~13 s for Gemma 3's 262k tokens), and ``AutoTokenizer`` parses it
again just to learn the config. heron applies transformers' own key table
(``GGUF_CONFIG_MAPPING``) to the metadata :class:`heron.loader.gguf_file.GGUFFile` already read,
for the architectures whose reading it reproduces exactly, and fills in a few sizes the table has
no key for (a Qwen3 head size, MoE expert widths). Architectures transformers cannot read at all
but heron serves (OLMo 2, Granite, SmolLM3) read with the Llama keys llama.cpp writes for them.
Anything else goes to transformers' own reader.
"""

from __future__ import annotations

from typing import Any

from heron.loader.gguf_file import GGUFFile

__all__ = ("gguf_config", "gguf_tokenizer")

#: GGUF architecture -> transformers model type, where they differ
_MODEL_TYPE = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gemma3": "gemma3_text"}
#: architectures read here (the rest by transformers): those whose table transformers has, and
#: those transformers lacks, read with another architecture's table
_OWN_TABLE = frozenset({"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "phi3", "gpt2"})
_BORROWED_TABLE = {"olmo2": "llama", "granite": "llama", "smollm3": "llama"}
#: metadata transformers' table has no key for: architecture -> {GGUF key: config attribute}
_EXTRA_KEYS = {
    "qwen3": {"attention.key_length": "head_dim"},
    "qwen2moe": {"expert_feed_forward_length": "moe_intermediate_size",
                 "expert_shared_feed_forward_length": "shared_expert_intermediate_size"},
    "qwen3moe": {"expert_feed_forward_length": "moe_intermediate_size"},
    "gpt2": {"context_length": "n_positions"},
    "granite": {"attention.scale": "attention_multiplier", "embedding_scale": "embedding_multiplier",
                "residual_scale": "residual_multiplier", "logit_scale": "logits_scaling"},
    "olmo2": {"attention.key_length": "head_dim"},
}


def _config_dict(gguf: GGUFFile) -> dict[str, Any]:
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    arch = gguf.architecture
    model_type = arch
    if arch == "llama" and gguf.field("general.name") == "mistral":
        model_type = "mistral"  # transformers' rule for llama.cpp's Mistral files
    model_type = _MODEL_TYPE.get(model_type, model_type)
    table = {**GGUF_CONFIG_MAPPING[_BORROWED_TABLE.get(arch, model_type.removesuffix("_text"))],
             **_EXTRA_KEYS.get(arch, {})}
    config: dict[str, Any] = {"model_type": model_type, "_model_name_or_path": gguf.field("general.name")}
    config["tie_word_embeddings"] = all(t.name != "output.weight" for t in gguf.tensors)
    for key, value in GGUF_CONFIG_DEFAULTS_MAPPING.get(model_type, {}).items():
        config.setdefault(key, value)
    for key, value in gguf.fields.items():
        prefix, _, rest = key.partition(".")
        target = table.get(rest) if prefix == arch else GGUF_CONFIG_MAPPING["tokenizer"].get(rest)
        if target and prefix in (arch, "tokenizer") and value is not None:
            config[target] = value
    tokens = gguf.field("tokenizer.ggml.tokens")
    vocab = len(tokens) if isinstance(tokens, list) else gguf.array_lengths.get("tokenizer.ggml.tokens")
    if "vocab_size" not in config and vocab:
        config["vocab_size"] = vocab
    if config["_model_name_or_path"] is None:
        del config["_model_name_or_path"]
    return config


def gguf_config(path: str) -> Any:
    """The transformers config of the GGUF file ``path`` (the first shard of a split set)."""
    from transformers import AutoConfig

    gguf = GGUFFile(path)
    if gguf.architecture not in _OWN_TABLE and gguf.architecture not in _BORROWED_TABLE:
        folder, _, name = path.rpartition("/")
        return AutoConfig.from_pretrained(folder or ".", gguf_file=name)
    config = _config_dict(gguf)
    return AutoConfig.for_model(**config)


def gguf_tokenizer(path: str, config: Any) -> Any:
    """The tokenizer of the GGUF file ``path``, of the class transformers maps ``config`` to
    (what ``AutoTokenizer`` does, without parsing the file a second time for the config).

    Raises:
        Exception: whatever transformers raises on tokenizer metadata it cannot use.
    """
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    folder, _, name = path.rpartition("/")
    cls = TOKENIZER_MAPPING.get(type(config), TokenizersBackend) or TokenizersBackend
    return cls.from_pretrained(folder or ".", gguf_file=name)
