"""GGUF checkpoints: names and converter fixups for every family, split sets, every quantization type.

Each family's tiny random checkpoint is converted to GGUF here the way llama.cpp's converter does
it (the ``gguf`` package's HF-to-GGUF name table, q/k permutation, ``+1`` Gemma norms, GPT-2
transposes, stacked experts), then read back through heron: every tensor must come back exactly
as the HF checkpoint stores it. Where transformers reads the family's GGUF too, it must read
the same file to the same model (so the converter here is faithful), and heron's model built
from the file must give transformers' logits.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from heron.loader import load_checkpoint
from heron.loader.gguf_config import gguf_config
from heron.loader.gguf_file import GGUFFile, can_dequantize
from heron.testing.models import check_against_transformers, tiny_checkpoint, tiny_config

Q = gguf.GGMLQuantizationType
# transformers' GGUF config reader leaves a few sizes at their defaults (no key for them): the tiny
# models use those defaults so that transformers reads the files right
MOE = dict(num_experts=4, num_experts_per_tok=2)
#: family -> (transformers model type, GGUF architecture, config overrides)
FAMILIES = {
    "llama": ("llama", "llama", {}),
    "mistral": ("mistral", "llama", {}),
    "qwen2": ("qwen2", "qwen2", {}),
    "qwen3": ("qwen3", "qwen3", {}),
    "gemma2": ("gemma2", "gemma2", {"head_dim": 16, "tie_word_embeddings": True}),
    "gemma3": ("gemma3_text", "gemma3", {"head_dim": 16, "tie_word_embeddings": True}),
    "phi3": ("phi3", "phi3", {"pad_token_id": 0}),
    "gpt2": ("gpt2", "gpt2", {"n_embd": 64, "n_layer": 2, "n_head": 4, "max_position_embeddings": 1024,
             "tie_word_embeddings": True}),
    "qwen2_moe": ("qwen2_moe", "qwen2moe", MOE),
    "qwen3_moe": ("qwen3_moe", "qwen3moe", {**MOE, "head_dim": 16}),
    "olmo2": ("olmo2", "olmo2", {}),
    "granite": ("granite", "granite", {}),
    "smollm3": ("smollm3", "smollm3", {"pad_token_id": 0}),
}
#: families whose GGUF config transformers cannot read (heron reads them with the Llama keys)
NO_HF_GGUF_CONFIG = {"olmo2", "granite", "smollm3"}
PERMUTED_ARCHS = {"llama", "granite", "smollm3"}
PLUS_ONE = {"gemma2", "gemma3"}
EXPERT_RE = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)\.weight$")


def same(got: torch.Tensor, want: torch.Tensor, family: str) -> bool:
    """Exactly equal, except Gemma norms (``(w + 1) - 1`` rounds in the last bit, in transformers too)."""
    if family in PLUS_ONE:
        return got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=1e-6)
    return torch.equal(got, want)


# -- a small llama.cpp-style converter ------------------------------------------------------------


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _metadata(writer: gguf.GGUFWriter, config, arch: str, section: str) -> None:
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    for key, attr in GGUF_CONFIG_MAPPING.get(section, GGUF_CONFIG_MAPPING["llama"]).items():
        value = getattr(config, attr, None) if attr else None
        if value is None and attr == "rope_theta":
            value = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        kind = gguf.GGUFValueType.UINT32 if isinstance(value, int) else gguf.GGUFValueType.FLOAT32
        writer.add_key_value(f"{arch}.{key}", value, kind)
    writer.add_array("tokenizer.ggml.tokens", [f"<{i}>" for i in range(config.vocab_size)])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(value := getattr(config, key, None), int) and value < config.vocab_size:
            writer.add_uint32(f"tokenizer.ggml.{key.replace('pad_', 'padding_')}", value)


def hf_to_gguf(folder: Path, family: str, out: Path, qtype=Q.F32, split_max_tensors: int = 0) -> dict:
    """Convert the tiny checkpoint in ``folder`` to ``out`` like llama.cpp; return its HF tensors."""
    model_type, arch, _ = FAMILIES[family]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    hf = load_file(folder / "model.safetensors")
    table = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch),
                                     config.num_hidden_layers)
    writer = gguf.GGUFWriter(out, arch, split_max_tensors=split_max_tensors)
    writer.add_name(f"{family}-tiny")
    _metadata(writer, config, arch, {"gemma3_text": "gemma3"}.get(model_type, model_type))
    stacked: dict[tuple[str, str], dict[int, torch.Tensor]] = defaultdict(dict)
    tensors = {}
    for name, w in hf.items():
        if m := EXPERT_RE.match(name):
            stacked[(m[1], m[3])][int(m[2])] = w
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        base, suffix = name.rsplit(".", 1)
        target = table.get_name(base) or table.get_name(base.removeprefix("transformer."))
        if target is None:
            continue  # e.g. GPT-2's attention mask buffer
        if arch in PERMUTED_ARCHS and ".self_attn.q_proj." in name:
            w = _permute(w, config.num_attention_heads)
        elif arch in PERMUTED_ARCHS and ".self_attn.k_proj." in name:
            w = _permute(w, config.num_key_value_heads)
        if family in PLUS_ONE and name.endswith("norm.weight"):
            w = w + 1
        if family == "gpt2" and name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            w = w.T
        if name.endswith("shared_expert_gate.weight"):
            w = w.reshape(-1)  # llama.cpp stores the shared-expert gate as a vector
        tensors[f"{target}.{suffix}"] = w
        if family == "gpt2" and target == "token_embd":
            tensors["output.weight"] = w  # GPT-2's converter writes the tied head out
    for (parent, leaf), experts in stacked.items():
        tensors[table.get_name(f"{parent}.{leaf}") + ".weight"] = torch.stack([experts[e] for e in sorted(experts)])
    for name, w in tensors.items():
        array = w.contiguous().numpy().astype(np.float32)
        kind = qtype if array.ndim >= 2 and array.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0 else Q.F32
        writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf


def hf_from_gguf(file: Path):
    """transformers' model for a GGUF file, config and tensors read by transformers' GGUF code
    (what ``from_pretrained(gguf_file=...)`` does, without needing accelerate)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(file), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> (HF folder, GGUF file, HF tensors, HF model), written once per module."""
    made = {}

    def make(family: str):
        if family not in made:
            model_type, _, overrides = FAMILIES[family]
            root = tmp_path_factory.mktemp(family)
            config = tiny_config(model_type, **overrides)
            model = tiny_checkpoint(config, root / "hf")
            out = root / "gguf" / f"{family}-tiny.gguf"
            out.parent.mkdir()
            made[family] = (root / "hf", out, hf_to_gguf(root / "hf", family, out), model)
        return made[family]

    return make


# -- every family ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_tensors_match_the_hf_checkpoint(tiny, family):
    _, file, hf, model = tiny(family)
    ckpt = load_checkpoint(str(file))
    got = dict(ckpt.weights())
    if family == "gpt2":  # llama.cpp writes GPT-2's tied head out as its own tensor
        assert torch.equal(got.pop("lm_head.weight"), hf["transformer.wte.weight"])
    expected = {k: v for k, v in hf.items() if not (k == "lm_head.weight" and "lm_head.weight" not in got)}
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert same(got[name], tensor, family), name
    # llama.cpp writes Mistral as ``llama``: a Llama with Mistral's weights
    assert ckpt.hf_config.architectures == (["LlamaForCausalLM"] if family == "mistral" else model.config.architectures)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - NO_HF_GGUF_CONFIG))
def test_config_equals_transformers_reading_the_file(tiny, family):
    from transformers import AutoConfig

    _, file, _, _ = tiny(family)
    ours = gguf_config(str(file)).to_dict()
    theirs = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name).to_dict()
    assert {k: v for k, v in ours.items() if k != "_name_or_path"} == {
        k: v for k, v in theirs.items() if k != "_name_or_path"}


@pytest.mark.parametrize("family", sorted(NO_HF_GGUF_CONFIG))
def test_families_transformers_cannot_read_run_like_the_hf_model(tiny, family):
    """olmo2, granite, smollm3: config from the Llama keys llama.cpp writes, same logits as HF."""
    _, file, _, model = tiny(family)
    config = load_checkpoint(str(file)).hf_config
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert getattr(config, key) == getattr(model.config, key), key
    assert check_against_transformers(file, model, "eager") < 1e-4


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - NO_HF_GGUF_CONFIG))
def test_transformers_reads_the_same_file_to_the_same_model(tiny, family):
    _, file, _, model = tiny(family)
    theirs = hf_from_gguf(file)
    ours = model.state_dict()
    for name, tensor in theirs.state_dict().items():
        assert same(tensor, ours[name], family), name


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - NO_HF_GGUF_CONFIG))
def test_heron_model_from_gguf_matches_transformers_from_gguf(tiny, family):
    _, file, _, _ = tiny(family)
    theirs = hf_from_gguf(file)
    assert check_against_transformers(file, theirs, "eager") < 1e-4


# -- split files ----------------------------------------------------------------------------------


def test_split_gguf_loads_from_any_shard_or_its_folder(tiny, tmp_path):
    folder, single, hf, _ = tiny("llama")
    split = tmp_path / "llama-tiny.gguf"
    hf_to_gguf(folder, "llama", split, split_max_tensors=7)
    shards = sorted(tmp_path.glob("*.gguf"))
    assert [s.name for s in shards] == [f"llama-tiny-{i:05d}-of-{len(shards):05d}.gguf" for i in range(1, len(shards) + 1)]
    assert len(shards) >= 3
    first = GGUFFile(shards[0])
    assert first.field("split.count") == len(shards) and first.field("split.no") == 0
    assert first.field("split.tensors.count") == GGUFFile(single).num_tensors()
    assert GGUFFile(shards[1]).field("llama.block_count") is None  # metadata lives in the first shard only
    want = dict(load_checkpoint(str(single)).weights())
    for model in (shards[0], shards[-1], tmp_path):
        ckpt = load_checkpoint(str(model))
        assert ckpt.path == str(shards[0])
        assert ckpt.hf_config.num_hidden_layers == 2
        got = dict(ckpt.weights())
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    shards[1].unlink()
    with pytest.raises(ValueError, match=f"{shards[1].name} is missing"):
        load_checkpoint(str(shards[0]))


# -- quantization types ---------------------------------------------------------------------------


def _quantizable() -> list:
    out = []
    for qtype in Q:
        try:
            gguf.quants.quantize(np.zeros((1, 256), dtype=np.float32), qtype)
        except NotImplementedError:
            continue
        out.append(qtype)
    return out


def _raw_blocks(qtype, rows: int, cols: int, rng) -> np.ndarray:
    """Random data of a type the gguf package can only dequantize (finite fp16 scales mostly)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)


DEQUANTIZABLE = [q for q in Q if can_dequantize(q)]


def test_the_type_lists_cover_what_llama_cpp_ships():
    names = {q.name for q in DEQUANTIZABLE}
    assert {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
            "IQ4_XS", "IQ2_XXS", "IQ3_S", "TQ1_0", "MXFP4"} <= names
    assert {"Q4_0", "Q8_0", "BF16", "F16", "MXFP4"} <= {q.name for q in _quantizable()}


@pytest.mark.parametrize("qtype", DEQUANTIZABLE, ids=lambda q: q.name)
def test_every_dequantizable_type_reads_like_gguf_dequantize(qtype, tmp_path):
    rng = np.random.default_rng(int(qtype))
    weights = rng.normal(size=(4, 512)).astype(np.float32)
    data = gguf.quants.quantize(weights, qtype) if qtype in _quantizable() else _raw_blocks(qtype, 4, 512, rng)
    writer = gguf.GGUFWriter(tmp_path / "q.gguf", "llama")
    writer.add_tensor("blk.0.ffn_up.weight", data, raw_dtype=qtype)
    writer.add_tensor("blk.0.attn_norm.weight", weights[0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    file = GGUFFile(tmp_path / "q.gguf")
    file.check_tensor_types()
    reference = gguf.GGUFReader(tmp_path / "q.gguf").tensors[0]
    got = file.dequantized(file.tensors[0])
    want = gguf.quants.dequantize(data, qtype)
    assert got.shape == (4, 512) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(file.data(file.tensors[0]), reference.data)
    if qtype in _quantizable() and qtype not in (Q.F32, Q.F16, Q.BF16):
        assert 0 < np.abs(want - weights).max() < 4  # really quantized, and still close


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_1, Q.MXFP4], ids=lambda q: q.name)
def test_a_quantized_checkpoint_loads_dequantized(tiny, tmp_path, qtype):
    folder, _, hf, _ = tiny("qwen3")
    hf_to_gguf(folder, "qwen3", tmp_path / "m.gguf", qtype=qtype)
    got = dict(load_checkpoint(str(tmp_path / "m.gguf"), quantization="gguf").weights())
    w = hf["model.layers.0.mlp.up_proj.weight"].numpy()
    expected = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype)
    np.testing.assert_array_equal(got["model.layers.0.mlp.up_proj.weight"].numpy(), expected)
    assert not torch.equal(got["model.layers.0.mlp.up_proj.weight"], hf["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("qtype", [q for q in (Q.Q8_K, Q.Q8_1) if not can_dequantize(q)], ids=lambda q: q.name)
def test_types_gguf_cannot_dequantize_are_refused_at_load(tiny, tmp_path, qtype):
    folder, *_ = tiny("llama")
    out = tmp_path / "m.gguf"
    hf_to_gguf(folder, "llama", out)
    reader = GGUFFile(out)
    bad = tmp_path / "bad.gguf"
    writer = gguf.GGUFWriter(bad, "llama")
    for key in ("llama.block_count", "llama.embedding_length", "llama.attention.head_count"):
        writer.add_uint32(key, int(reader.field(key)))
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((96, 64 // block * size), dtype=np.uint8), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=rf"blk\.0\.ffn_up\.weight as {qtype.name}, a GGUF type heron cannot"):
        load_checkpoint(str(bad))
