"""Read GGUF checkpoints (one file or a split set): metadata, and HF-named float tensors.

:class:`GGUFFile` parses only what heron needs: scalar and string metadata and the tensor table;
large arrays (a 262k-token vocabulary) are skipped over, not decoded, so opening a file takes
milliseconds where ``gguf.GGUFReader`` builds one numpy view per vocabulary entry. Tensor data are
memory-mapped views laid out as ``GGUFReader`` lays them out, dequantized with
``gguf.quants.dequantize`` (every type the ``gguf`` package can dequantize; files holding other
types are refused when opened), renamed and fixed up by :mod:`heron.loader.gguf_names`. A split
set (``name-00001-of-00003.gguf``, as ``llama-gguf-split`` writes) keeps its metadata in the
first shard and tensors in all of them. With ``quantized=True`` (the linear kernel computes on the
file's blocks) :func:`gguf_tensors` yields each quantized matrix as a
:class:`heron.layers.quantized.QuantizedTensor` (raw blocks, no dequantized copy) instead.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heron.layers.quantized import QuantizedTensor, block_shape
from heron.loader.gguf_names import ConverterFixups, GGUFNameMap, unpermute_qk

__all__ = ("GGUFFile", "GGUFTensorInfo", "can_dequantize", "gguf_shards", "gguf_tensors", "gguf_to_hf_name",
           "unpermute_qk")

_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
#: GGUF metadata value types with a fixed size: type id -> struct format
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
#: arrays longer than this are skipped (vocabularies, merges, scores), not decoded
_MAX_ARRAY = 1024
_PLAIN_DTYPES = {0: np.float32, 1: np.float16}  # GGML types stored as numpy floats


@dataclass(frozen=True, slots=True)
class GGUFTensorInfo:
    """One entry of a GGUF tensor table: ``dims`` in GGML order (fastest-varying first)."""

    name: str
    dims: tuple[int, ...]
    tensor_type: Any  # gguf.GGMLQuantizationType
    offset: int  # from the start of the file


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0
        self.skipped = 0  # the length of the last array skipped

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.unpack("<Q")
        self.pos += size
        return bytes(self.data[self.pos - size : self.pos]).decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown GGUF metadata type {vtype}")
        etype, count = self.unpack("<I"), self.unpack("<Q")
        self.skipped = count if count > _MAX_ARRAY else 0
        if count > _MAX_ARRAY and etype in _SCALARS:
            self.pos += count * struct.calcsize(_SCALARS[etype])
            return None
        if count > _MAX_ARRAY and etype == _STRING:
            for _ in range(count):
                size = self.unpack("<Q")  # (``self.pos += self.unpack()`` would lose the advance)
                self.pos += size
            return None
        return [self.value(etype) for _ in range(count)]


class GGUFFile:
    """One GGUF file: its metadata (arrays over 1024 entries read as None) and tensor table.

    Args:
        path: the ``.gguf`` file.

    Raises:
        ValueError: the file is not GGUF (version 2 or 3).
    """

    def __init__(self, path: str | Path) -> None:
        from gguf import GGMLQuantizationType

        self.path = str(path)
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(memoryview(self._map))
        if bytes(self._map[:4]) != b"GGUF" or struct.unpack_from("<I", self._map, 4)[0] not in (2, 3):
            raise ValueError(f"{self.path} is not a GGUF (version 2 or 3) file.")
        cur.pos = 8
        tensor_count, kv_count = cur.unpack("<Q"), cur.unpack("<Q")
        self.fields: dict[str, Any] = {}
        self.array_lengths: dict[str, int] = {}  # of the arrays read as None
        for _ in range(kv_count):
            key = cur.string()
            self.fields[key] = cur.value(cur.unpack("<I"))
            if self.fields[key] is None:
                self.array_lengths[key] = cur.skipped
        infos = []
        for _ in range(tensor_count):
            name, ndims = cur.string(), cur.unpack("<I")
            dims = tuple(cur.unpack("<Q") for _ in range(ndims))
            infos.append((name, dims, GGMLQuantizationType(cur.unpack("<I")), cur.unpack("<Q")))
        align = int(self.fields.get("general.alignment", 32))
        start = -(-cur.pos // align) * align
        self.tensors = [GGUFTensorInfo(n, d, t, start + o) for n, d, t, o in infos]

    def field(self, key: str, default: Any = None) -> Any:
        """A metadata value (e.g. ``general.architecture``), or ``default``."""
        value = self.fields.get(key)
        return default if value is None else value

    @property
    def architecture(self) -> str:
        return str(self.field("general.architecture", ""))

    def num_tensors(self) -> int:
        return len(self.tensors)

    def data(self, info: GGUFTensorInfo) -> np.ndarray:
        """The raw data of ``info`` as ``GGUFReader`` gives it (floats, or bytes with the last
        dimension in bytes for quantized types), a view of the memory map."""
        from gguf import GGML_QUANT_SIZES
        from gguf.quants import quant_shape_to_byte_shape

        shape = tuple(reversed(info.dims))  # numpy order: slowest-varying first
        dtype = _PLAIN_DTYPES.get(int(info.tensor_type))
        if dtype is None:
            shape = quant_shape_to_byte_shape(shape, info.tensor_type)
            dtype = np.uint8
        count = int(np.prod(shape)) if shape else 1
        nbytes = count * np.dtype(dtype).itemsize
        block, size = GGML_QUANT_SIZES[info.tensor_type]
        assert dtype is not np.uint8 or nbytes == int(np.prod(info.dims)) // block * size
        return self._map[info.offset : info.offset + nbytes].view(dtype).reshape(shape)

    def read(self, info: GGUFTensorInfo) -> np.ndarray:
        """A writable copy of :meth:`data`, read from the file rather than through the memory map, so
        no page of the file stays mapped (resident) after loading: the loaded weights are the only copy."""
        view = self.data(info)  # shape, dtype and byte range; nothing read yet
        out = np.empty(view.shape, dtype=view.dtype)
        buf, done = memoryview(out).cast("B"), 0
        with open(self.path, "rb", buffering=0) as f:
            f.seek(info.offset)
            while done < len(buf):
                got = f.readinto(buf[done:])
                if not got:
                    raise ValueError(f"{self.path} ends inside tensor {info.name}: the file is truncated.")
                done += got
        return out

    def check_tensor_types(self) -> None:
        """Refuse a file holding tensors the ``gguf`` package cannot dequantize.

        Raises:
            ValueError: names the type, one tensor of that type, and the types heron reads.
        """
        from gguf import GGMLQuantizationType

        for t in self.tensors:
            if not can_dequantize(t.tensor_type):
                readable = [q.name for q in GGMLQuantizationType if can_dequantize(q)]
                raise ValueError(
                    f"{Path(self.path).name} holds {t.name} as {t.tensor_type.name}, a GGUF type heron cannot "
                    f"dequantize; heron reads {', '.join(readable)}: requantize the model to one of those."
                )

    def is_quantized(self) -> bool:
        """Whether some tensor is stored as quantized blocks (not plain floats)."""
        return any(block_shape(int(t.tensor_type))[0] > 1 for t in self.tensors)

    def quantized(self, info: GGUFTensorInfo, fix: ConverterFixups) -> QuantizedTensor | None:
        """``info``'s raw blocks (a copy, the converter's q/k row permutation undone) when it is a quantized
        matrix whose fix-ups only reorder rows; else None (it must be dequantized)."""
        if len(info.dims) != 2 or block_shape(int(info.tensor_type))[0] == 1:
            return None
        if (fix.transposed and info.name.endswith(fix.transposed)) or (fix.plus_one and info.name.endswith("norm.weight")):
            return None
        raw = fix(info.name, torch.from_numpy(self.read(info)))  # uint8 [N, row_bytes]
        return QuantizedTensor(raw.contiguous(), int(info.tensor_type), (info.dims[1], info.dims[0]))

    def dequantized(self, info: GGUFTensorInfo) -> torch.Tensor:
        """``info``'s tensor as float32, shape in numpy order (a copy, never a view of the file)."""
        from gguf.quants import dequantize

        array = np.asarray(dequantize(self.read(info), info.tensor_type), dtype=np.float32)
        if not array.flags.writeable or not array.flags.c_contiguous:  # defensive: never hand out a read-only view
            array = np.array(array, dtype=np.float32, order="C")
        return torch.from_numpy(array)


@functools.cache
def can_dequantize(qtype: Any) -> bool:
    """Whether ``gguf.quants.dequantize`` handles ``qtype`` (a ``GGMLQuantizationType``)."""
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    _, type_size = GGML_QUANT_SIZES[qtype]
    try:
        dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def gguf_shards(path: Path) -> list[Path]:
    """The files of the GGUF checkpoint ``path`` belongs to: itself, or its whole split set in order.

    Raises:
        ValueError: a shard of the split set is missing.
    """
    m = _SPLIT_RE.match(path.name)
    if m is None:
        return [path]
    count = int(m["count"])
    shards = [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise ValueError(f"{path.name} is one of {count} GGUF shards, but {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} missing from {path.parent}.")
    return shards


@functools.cache
def _llama_names() -> GGUFNameMap:
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=64, hidden_size=8, intermediate_size=8, num_attention_heads=1,
                         vocab_size=8, attention_bias=True)
    return GGUFNameMap.for_config("llama", config)


def gguf_to_hf_name(name: str, names: GGUFNameMap | None = None) -> str | None:
    """The transformers name of GGUF tensor ``name`` under ``names`` (default: a Llama model);
    None for tensors heron recomputes; unknown names come back unchanged."""
    return (names or _llama_names()).hf_name(name)


def gguf_tensors(files: list[str], config: Any, num_layers: int | None = None,
                 quantized: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of the GGUF shards ``files`` with transformers names and values.

    Args:
        files: the checkpoint's shards in order (one file for an unsplit checkpoint).
        config: the transformers config read from the first shard.
        num_layers: the GGUF block count (default: the config's layer count).
        quantized: yield quantized matrices as :class:`QuantizedTensor` (their blocks), not float32.
    """
    arch = GGUFFile(files[0]).architecture
    names = GGUFNameMap.for_config(arch, config, num_layers)
    fix = ConverterFixups(arch, config)
    for file in files:
        gguf = GGUFFile(file)
        for info in gguf.tensors:
            blocks = gguf.quantized(info, fix) if quantized else None
            if blocks is not None:
                name = names.hf_name(info.name)
                if name is not None:
                    yield name, blocks
                continue
            tensor = fix(info.name, gguf.dequantized(info))  # [experts, rows, cols] for stacked experts
            experts = names.expert_names(info.name, tensor.shape[0]) if tensor.dim() == 3 else None
            if experts is not None:
                yield from zip(experts, tensor.unbind(0), strict=True)
                continue
            name = names.hf_name(info.name)
            if name is None:
                continue
            shape = names.shape(name)
            if shape is not None and len(shape) != tensor.dim() and tensor.numel() == int(np.prod(shape)):
                tensor = tensor.reshape(shape)  # e.g. a router gate llama.cpp stored as a vector
            yield name, tensor
