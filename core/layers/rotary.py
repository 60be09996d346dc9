"""Rotary position embeddings with the HF rope scaling types: default, linear, dynamic, llama3, yarn, longrope.

Inverse frequencies and the attention scaling are computed the way transformers computes them, so
a heron model matches its transformers counterpart. Positions come per token as a flat tensor
(tokens of many requests mixed); ``cos``/``sin`` are computed once per forward and shared by all
layers through :func:`apply_rotary`. Configs whose ``rope_parameters`` are keyed by layer type
(Gemma 3: local rope for sliding layers, global rope for full ones) give one table per layer type.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from heron.layers.fused_ops import rotate_heads_fused

if TYPE_CHECKING:
    from heron.interfaces import ForwardBatch

__all__ = (
    "ROPE_TYPES",
    "RotaryEmbedding",
    "RotaryTables",
    "apply_rotary",
    "get_rope",
    "rope_parameters",
    "rotary_tables",
    "rotate_heads",
)

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


def _base_inv_freq(base: float, dim: int) -> torch.Tensor:
    # [dim // 2] float32, built on the CPU whatever device context the model is built under
    exps = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").to(torch.float32) / dim
    return 1.0 / (base**exps)


def _longrope(base: float, dim: int, p: dict[str, Any], max_pos: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(short inv_freq, long inv_freq, attention factor) of Phi-3's LongRoPE, as transformers computes them."""
    need = ("short_factor", "long_factor", "original_max_position_embeddings")
    if any(p.get(k) is None for k in need):
        raise ValueError(f"longrope needs {', '.join(need)} in the rope parameters; got {sorted(p)}.")
    orig = p["original_max_position_embeddings"]
    factor = p.get("factor") or max_pos / orig
    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    exps = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim

    def scaled(factors: list[float]) -> torch.Tensor:
        return 1.0 / (torch.tensor(factors, dtype=torch.float32) * base**exps)

    return scaled(p["short_factor"]), scaled(p["long_factor"]), float(attention_factor)


def _token_seq_lens(positions: torch.Tensor, batch: ForwardBatch | None) -> torch.Tensor:
    """[T] length of each token's request after this step (the longest position + 1 without a batch)."""
    if batch is not None:
        q_lens = torch.tensor(batch.query_lens, device=positions.device)
        return torch.repeat_interleave(batch.seq_lens_tensor.to(positions.device), q_lens)
    seq_len = positions.max() + 1 if positions.numel() else positions
    return seq_len.expand_as(positions)


def _llama3_inv_freq(inv_freq: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_len = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def _yarn_inv_freq(base: float, dim: int, p: dict[str, Any], max_pos: int) -> tuple[torch.Tensor, float]:
    orig = p.get("original_max_position_embeddings") or max_pos
    factor = p.get("factor") or max_pos / orig

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        m, m_all = p.get("mscale"), p.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation = 1 - ramp  # 1 = keep the original frequency, 0 = interpolate
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """Neox-style rotary embedding (rotate-half) over the first ``rotary_dim`` channels of a head.

    Args:
        rotary_dim: channels rotated per head (``head_size * partial_rotary_factor``).
        base: ``rope_theta``.
        max_position: the config's ``max_position_embeddings``.
        rope_type: one of :data:`ROPE_TYPES`.
        params: the scaling parameters (``factor``, ``low_freq_factor``, ...).
    """

    def __init__(
        self,
        rotary_dim: int,
        base: float,
        max_position: int,
        rope_type: str = "default",
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"Unsupported rope type {rope_type!r}; heron supports {', '.join(ROPE_TYPES)}.")
        p = dict(params or {})
        self.rotary_dim, self.base, self.max_position, self.rope_type = rotary_dim, base, max_position, rope_type
        self.factor = float(p.get("factor") or 1.0)
        self.attention_scaling = 1.0
        inv_freq = _base_inv_freq(base, rotary_dim)
        if rope_type == "linear":
            inv_freq = inv_freq / self.factor
        elif rope_type == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, p)
        elif rope_type == "yarn":
            inv_freq, self.attention_scaling = _yarn_inv_freq(base, rotary_dim, p, max_position)
        elif rope_type == "longrope":
            inv_freq, self.long_inv_freq, self.attention_scaling = _longrope(base, rotary_dim, p, max_position)
            self.original_max_position = int(p["original_max_position_embeddings"])
        # A plain attribute, not a buffer: it survives meta-device construction + ``to_empty``.
        self.inv_freq = inv_freq  # [rotary_dim // 2] float32
        #: at most one [n, 2, rotary_dim] float32 table: cos and sin of positions [0, n), grown on
        #: demand (types whose frequencies do not depend on the request's length); indexing it gives
        #: the same bits. Held in a list, not as a tensor attribute: derived data, which sleep mode
        #: neither releases nor expects a reloaded model to have.
        self._table: list[torch.Tensor] = []

    def _dynamic_inv_freq(self, seq_lens: torch.Tensor) -> torch.Tensor:
        """NTK-aware base per token from its request's length: [T] -> [T, rotary_dim // 2]."""
        dim = self.rotary_dim
        seq = seq_lens.to(torch.float32).clamp(min=self.max_position)
        base = self.base * ((self.factor * seq / self.max_position) - (self.factor - 1)) ** (dim / (dim - 2))
        exps = torch.arange(0, dim, 2, dtype=torch.int64, device=seq.device).to(torch.float32) / dim
        return 1.0 / (base[:, None] ** exps[None, :])

    def forward(
        self, positions: torch.Tensor, batch: ForwardBatch | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for every token.

        Args:
            positions: [T] int64 position of each token in its sequence.
            batch: the step's batch; "dynamic" scaling uses each request's current length, as
                transformers does when it grows its cache one step at a time; "longrope" takes the
                long factors for a request longer than ``original_max_position_embeddings`` (its
                cached keys keep the factors they were written with, as in transformers).
        Returns:
            (cos, sin), each [T, rotary_dim] float32, already multiplied by the attention scaling.
        """
        if self.rope_type not in ("dynamic", "longrope"):
            table = self._cached(positions, batch)  # [n, 2, rd]
            if table is not None:
                cos_sin = table.index_select(0, positions)  # [T, 2, rd]
                return cos_sin[:, 0], cos_sin[:, 1]
        return self._compute(positions, batch)

    def _cached(self, positions: torch.Tensor, batch: ForwardBatch | None) -> torch.Tensor | None:
        """The cos/sin table covering ``positions`` (grown to the next power of two), None when empty."""
        if not positions.numel():
            return None
        needed = max(batch.seq_lens) if batch is not None and batch.seq_lens else int(positions.max()) + 1
        table = self._table[0] if self._table else None
        if table is None or table.shape[0] < needed or table.device != positions.device:
            n = 1 << max(needed - 1, 1).bit_length()
            cos, sin = self._compute(torch.arange(n, device=positions.device), None)
            table = torch.stack((cos, sin), dim=1)  # [n, 2, rd]
            self._table[:] = [table]
        return table

    def _compute(self, positions: torch.Tensor, batch: ForwardBatch | None) -> tuple[torch.Tensor, torch.Tensor]:
        pos = positions.to(torch.float32)
        if self.rope_type == "dynamic":
            freqs = pos[:, None] * self._dynamic_inv_freq(_token_seq_lens(positions, batch))  # [T, rd/2]
        else:
            if self.inv_freq.device != positions.device:
                self.inv_freq = self.inv_freq.to(positions.device)
            inv_freq = self.inv_freq[None, :]  # [1, rd/2]
            if self.rope_type == "longrope":
                self.long_inv_freq = self.long_inv_freq.to(positions.device)
                is_long = _token_seq_lens(positions, batch) > self.original_max_position  # [T]
                inv_freq = torch.where(is_long[:, None], self.long_inv_freq[None, :], inv_freq)  # [T, rd/2]
            freqs = pos[:, None] * inv_freq  # [T, rd/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, rd]
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    def extra_repr(self) -> str:
        return f"rotary_dim={self.rotary_dim}, base={self.base}, type={self.rope_type}"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys.

    Args:
        q: [T, H, D]; k: [T, Hkv, D].
        cos, sin: [T, rotary_dim] from :class:`RotaryEmbedding` (rotary_dim <= D).
    Returns:
        the rotated (q, k), same shapes and dtype.
    """
    cos = cos.to(q.dtype)[:, None, :]  # [T, 1, rd]
    sin = sin.to(q.dtype)[:, None, :]
    rd = cos.shape[-1]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        if rd == x.shape[-1]:
            return x * cos + _rotate_half(x) * sin
        xr, rest = x[..., :rd], x[..., rd:]
        return torch.cat((xr * cos + _rotate_half(xr) * sin, rest), dim=-1)

    return rotate(q), rotate(k)


class RotaryTables(NamedTuple):
    """cos and sign-folded sin in the model dtype, ``[T, 1, rotary_dim]``, built once per step."""

    cos: torch.Tensor
    sin: torch.Tensor  # [-sin | sin]: rotate_half(x) * sin == roll(x, rd / 2) * this, exactly


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> RotaryTables:
    """Cast :class:`RotaryEmbedding`'s output once per step for :func:`rotate_heads` (every layer)."""
    half = sin.shape[-1] // 2
    signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
    return RotaryTables(cos.to(dtype)[:, None, :], signed.to(dtype)[:, None, :])


def rotate_heads(x: torch.Tensor, tables: RotaryTables) -> torch.Tensor:
    """Rotate ``[T, heads, D]`` (queries and keys may share it, stacked on the head axis).

    ``x * cos + rotate_half(x) * sin`` computed as ``x * cos + roll(x) * [-sin | sin]``: the
    same products and sums as :func:`apply_rotary` (so the same bits), in one C++ pass on the
    CPU (:mod:`heron.layers.fused_ops`), else in four torch ops. Returns a new contiguous tensor.
    """
    fused = rotate_heads_fused(x, tables.cos, tables.sin)
    if fused is not None:
        return fused
    rd = tables.cos.shape[-1]
    if rd == x.shape[-1]:
        return x * tables.cos + x.roll(rd // 2, dims=-1) * tables.sin
    xr = x[..., :rd]
    return torch.cat((xr * tables.cos + xr.roll(rd // 2, dims=-1) * tables.sin, x[..., rd:]), dim=-1)


def _per_layer_type(params: dict[str, Any]) -> bool:
    """Whether ``rope_parameters`` maps layer types (``"full_attention"``, ...) to rope settings."""
    return bool(params) and all(isinstance(v, dict) or v is None for v in params.values())


def rope_parameters(config: Any, layer_type: str | None = None) -> dict[str, Any]:
    """The rope settings of an HF config (transformers 5 ``rope_parameters`` or 4.x ``rope_scaling``).

    Args:
        config: the HF (text) config.
        layer_type: for configs whose ``rope_parameters`` are keyed by layer type, the type whose
            settings to return (``"sliding_attention"``, ...); ``None`` means ``"full_attention"``.
    Raises:
        ValueError: the config has per-layer-type settings but none for ``layer_type``.
    """
    params = getattr(config, "rope_parameters", None)
    if params and _per_layer_type(params):
        key = layer_type or "full_attention"
        if params.get(key) is None:
            raise ValueError(f"The config has no rope parameters for layer type {key!r}; it has {sorted(params)}.")
        params = params[key]
    elif not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params = dict(params)
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    if params["rope_type"] in ("su", "longrope"):  # "su" is Phi-3's old name for it
        params["rope_type"] = "longrope"
        orig = getattr(config, "original_max_position_embeddings", None) or config.max_position_embeddings
        params.setdefault("original_max_position_embeddings", orig)
    return params


def get_rope(config: Any, head_size: int, layer_type: str | None = None) -> RotaryEmbedding:
    """Build the rotary embedding an HF ``config`` describes for heads of ``head_size``.

    ``layer_type`` picks per-layer-type settings (see :func:`rope_parameters`).
    """
    p = rope_parameters(config, layer_type)
    rotary_dim = int(head_size * p.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)))
    return RotaryEmbedding(rotary_dim, float(p["rope_theta"]), config.max_position_embeddings, p["rope_type"], p)
