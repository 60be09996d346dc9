"""Linear kernels: exact ones equal ``F.linear`` bit for bit, int4/int8 equal their dequantized
weights, selection follows ``--linear-kernel``, and a converted model still computes the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heron.layers import UnsupportedLinearKernelError, apply_linear_kernel, select_linear_kernel
from heron.plugins import UnknownPluginError, registry
from heron_plugins.kernels.linear import (
    MAX_QUANT_ROWS,
    Int4Kernel,
    Int4Linear,
    Int8Linear,
    OneDNNKernel,
    dequantize_int4,
    quantize_int4,
)
from tests.helpers_model import PagedRunner, tiny_checkpoint, tiny_config

CPU = torch.device("cpu")
BF16_ONEDNN = OneDNNKernel.supports(CPU, torch.bfloat16) is None


def _linear(n_in: int, n_out: int, bias: bool, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
    return layer


def test_registered_kernels_and_auto_choice():
    assert {"dense", "onednn", "int4"} <= set(registry("linear_kernels").names())
    cls, why = select_linear_kernel("auto", CPU, torch.float32)
    assert cls.name == "dense" and "auto chose 'dense'" in why  # fp32 keeps F.linear (parity)
    cls, why = select_linear_kernel("auto", CPU, torch.bfloat16)
    assert cls.name == ("onednn" if BF16_ONEDNN else "dense")
    assert not Int4Kernel.exact  # auto never quantizes
    with pytest.raises(UnsupportedLinearKernelError, match="int4 computes in bf16"):
        select_linear_kernel("int4", CPU, torch.float32)
    with pytest.raises(UnknownPluginError, match="Did you mean 'int4'"):
        select_linear_kernel("int5", CPU, torch.bfloat16)


@pytest.mark.skipif(not BF16_ONEDNN, reason="no oneDNN bf16 on this CPU")
@pytest.mark.parametrize("rows", [1, 3, 17, 64])
@pytest.mark.parametrize(("n_in", "n_out", "bias"), [(576, 960, False), (1536, 576, True), (64, 300, False)])
def test_onednn_equals_f_linear_bit_for_bit(rows, n_in, n_out, bias):
    layer = _linear(n_in, n_out, bias)
    packed = OneDNNKernel().convert(layer, "model.layers.0.mlp.down_proj")
    x = torch.randn(rows, n_in).to(torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(packed(x), F.linear(x, layer.weight, layer.bias))


def test_int4_quantization_reproduces_a_q4_1_grid():
    # weights that are exactly q * d + m per group of 32 (what GGUF Q4_1 stores)
    torch.manual_seed(1)
    n, k = 8, 64
    q_true = torch.randint(0, 16, (n, k))
    q_true[:, ::32] = 0
    q_true[:, 1::32] = 15  # every group spans the full grid, as Q4_1's min/max do
    d = (torch.rand(n, k // 32) * 0.02 + 0.005).to(torch.bfloat16).float().repeat_interleave(32, 1)
    m = (torch.randn(n, k // 32) * 0.05).to(torch.bfloat16).float().repeat_interleave(32, 1)
    w = q_true * d + m
    q, sz = quantize_int4(w)
    assert q.min() >= 0 and q.max() <= 15
    assert torch.equal(q, q_true.to(torch.int32))
    back = dequantize_int4(q, sz)
    # only the bf16 rounding of the stored scale and zero (zero = m + 8 d) remains
    s_, z_ = (sz[..., i].t().float().repeat_interleave(32, 1) for i in (0, 1))
    assert ((back - w).abs() <= 2**-8 * (z_.abs() + 8 * s_)).all()


def test_int4_error_is_bounded_by_half_a_step_on_arbitrary_weights():
    torch.manual_seed(2)
    w = torch.randn(16, 96)
    q, sz = quantize_int4(w)
    back = dequantize_int4(q, sz)
    step = sz[..., 0].t().float().repeat_interleave(32, 1)
    assert ((back - w).abs() <= 0.5 * step * 1.05 + 1e-6).all()


@pytest.mark.parametrize("bias", [False, True])
def test_int4_linear_small_and_large_steps_compute_the_dequantized_weights(bias):
    layer = _linear(576, 960, bias)
    mod = Int4Linear(layer)
    wq, sz = quantize_int4(layer.weight)
    ref_w = dequantize_int4(wq, sz)
    x = torch.randn(MAX_QUANT_ROWS + 8, 576).to(torch.bfloat16)
    with torch.inference_mode():
        large = mod(x)  # dense path over the dequantized weights
        small = torch.cat([mod(x[i : i + 1]) for i in range(4)])  # the 4-bit GEMM
    ref = x.float() @ ref_w.t() + (layer.bias.float() if bias else 0)
    scale = ref.abs().max()
    assert (large.float() - ref).abs().max() <= 0.02 * scale
    assert (small.float() - ref[:4]).abs().max() <= 0.02 * scale
    assert (small.float() - large[:4].float()).abs().max() <= 0.02 * scale


def test_int8_head_matches_its_dequantized_weights():
    layer = _linear(576, 4096, False)
    mod = Int8Linear(layer)
    ref_w = mod.q.float() * mod.scales.float()[:, None]
    assert (ref_w - layer.weight.float()).abs().max() <= mod.scales.float().max() / 2 + 1e-6
    x = torch.randn(2, 576).to(torch.bfloat16)
    with torch.inference_mode():
        out = mod(x).float()
    ref = x.float() @ ref_w.t()
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max()


def _dequantized_copy(runner: PagedRunner) -> None:
    """Replace every projection of ``runner.model`` by the bf16 weights the int4 kernel encodes."""
    with torch.no_grad():
        for name, module in runner.model.named_modules():
            if isinstance(module, nn.Linear) and not name.endswith("lm_head"):
                module.weight.copy_(dequantize_int4(*quantize_int4(module.weight)).to(torch.bfloat16))


def test_int4_kernel_converts_a_model_and_computes_its_quantized_weights(tmp_path):
    config = tiny_config("llama", hidden_size=128, intermediate_size=256, tie_word_embeddings=True)
    tiny_checkpoint(config, tmp_path)
    dense = PagedRunner.load(tmp_path, "torch_sdpa", dtype=torch.bfloat16)
    dense.model.lm_head = nn.Linear(128, config.vocab_size, bias=False).to(torch.bfloat16)
    quant = PagedRunner.load(tmp_path, "torch_sdpa", dtype=torch.bfloat16)
    head = Int8Linear(quant.model.lm_head)
    with torch.no_grad():
        dense.model.lm_head.weight.copy_((head.q.float() * head.scales.float()[:, None]).to(torch.bfloat16))
    _dequantized_copy(dense)
    changed = apply_linear_kernel(quant.model, Int4Kernel())
    assert changed == 2 * 4 + 1  # qkv, o, gate_up, down per layer + lm_head
    assert isinstance(quant.model.lm_head, Int8Linear)
    assert isinstance(quant.model.model.layers[0].mlp.down_proj, Int4Linear)
    assert quant.model.model.embed_tokens.weight.dtype == torch.bfloat16  # the tied embedding stays
    prompt = list(range(3, 40))
    ref = dense.step({"a": prompt})["a"]
    got = quant.step({"a": prompt})["a"]  # 37 rows: the dense path of the quantized weights
    dec_ref = dense.step({"a": [7]})["a"]
    dec_got = quant.step({"a": [7]})["a"]  # 1 row: the 4-bit GEMM
    if BF16_ONEDNN:  # large steps: the same bf16 GEMM on the same dequantized weights
        assert torch.equal(got, ref)
    else:
        torch.testing.assert_close(got, ref, rtol=0.02, atol=0.02)
    cos = F.cosine_similarity(dec_ref.float(), dec_got.float(), dim=-1)  # 4-bit GEMM vs bf16 GEMM
    assert cos.min() > 0.999, cos
    assert torch.equal(dec_got.argmax(-1), dec_ref.argmax(-1))
