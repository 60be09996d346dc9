"""Decode-shaped timings of ``gguf_ops.gguf_linear`` against a dense bfloat16 ``F.linear``.

The four matmul shapes of SmolLM2-135M (hidden 576, MLP 1536, vocabulary 49152) with the weight in
Q4_1 and Q8_0, for each ISA path this CPU runs (the row path, gguf_linear's default), and the tile path
(``tiles``: dequantized tiles and ``at::mm``, best ISA), at ``T`` rows of x (1 = single-stream decode).
Weights are random blocks (gguf-py's quantization of random floats). Prints microseconds per call
(median of ``--reps``) and the weight bytes streamed per second.

    .venv/bin/python benchmarks/gguf_ops.py --threads 2 --tokens 1 4 64
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from heron_plugins.kernels import gguf_ops

SHAPES = ((576, 576), (1536, 576), (576, 1536), (49152, 576))  # (N out, K in)
TYPES = {"Q4_1": 3, "Q8_0": 8}


def _time(fn: Callable[[], object], reps: int) -> float:
    """Median seconds per call."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _blocks(qtype: int, n: int, k: int) -> torch.Tensor:
    import gguf
    import gguf.quants

    data = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32) * 0.05
    return torch.from_numpy(gguf.quants.quantize(data, gguf.GGMLQuantizationType(qtype)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tokens", type=int, nargs="+", default=[1])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--isa", nargs="*", default=None, help="ISA paths to time (default: all this CPU runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    isas = args.isa or list(gguf_ops.isas())
    print(f"threads={args.threads} isas={','.join(gguf_ops.isas())}")
    print(f"{'shape NxK':>12} {'T':>3} {'type':>5} {'path':>10} {'us/call':>9} {'GB/s':>6}")
    for t in args.tokens:
        for n, k in SHAPES:
            x = torch.randn(t, k).to(torch.bfloat16)
            dense = torch.randn(n, k).to(torch.bfloat16)
            sec = _time(lambda x=x, w=dense: F.linear(x, w), args.reps)
            print(f"{n:>6}x{k:<5} {t:>3} {'bf16':>5} {'dense':>10} {sec * 1e6:>9.1f} {dense.nbytes / sec / 1e9:>6.2f}")
            for name, qtype in TYPES.items():
                raw = _blocks(qtype, n, k)
                for isa, tiles in [*((i, None) for i in isas), (None, 1)]:
                    sec = _time(lambda x=x, raw=raw, q=qtype, i=isa, f=tiles: gguf_ops.gguf_linear(
                        x, raw, q, isa=i, tiles_from=f), args.reps)
                    gbs = raw.nbytes / sec / 1e9
                    print(f"{n:>6}x{k:<5} {t:>3} {name:>5} {isa or 'tiles':>10} {sec * 1e6:>9.1f} {gbs:>6.2f}")


if __name__ == "__main__":
    main()
