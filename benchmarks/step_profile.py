"""Where a decode step's time goes: input preparation, the forward by kind of work, LM head, sampling, bookkeeping.

Loads the default model (bundled SmolLM2-135M-Instruct) through the offline engine, fills a batch of
``B`` decoding requests (greedy, EOS ignored) and times ``--steps`` decode steps three times: bare
with the decoder layers as one C++ call (heron_plugins.models.native_stack, where the model and its
kernels have one: the default), bare on the Python modules (``HERON_NATIVE_STACK=0``), and on the
modules with wall-clock timers around the engine's phases and the model's
modules (matmuls = every ``nn.Linear`` but the LM head; attention = the ``Attention`` layers; norms;
rotary = the cos/sin tables and the q/k rotation; activation = the gated activation; other = what
is left of the forward: embedding, residual adds, views, Python, and the timers' own cost). Then
offline single-stream throughput: ``LLM.generate`` of one prompt, 128 new tokens.

    .venv/bin/python benchmarks/step_profile.py --batch-sizes 1 16 --steps 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_TIMES: dict[str, list[float]] = defaultdict(list)  # phase -> seconds per call, this step
_ORDER = ("schedule", "input_prep", "matmul", "attention", "norm", "rotary", "activation", "forward_other",
          "lm_head", "sampling", "bookkeeping")


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _TIMES[name].append(time.perf_counter() - start)

    return wrapper


def _module_kind(module: nn.Module) -> str | None:
    from heron.layers import ActAndMul, Attention, GemmaRMSNorm, RMSNorm, RotaryEmbedding

    kinds = ((Attention, "attention"), ((RMSNorm, GemmaRMSNorm), "norm"), (RotaryEmbedding, "rotary"),
             (ActAndMul, "activation"))
    for cls, kind in kinds:
        if isinstance(module, cls):
            return kind
    # nn.Linear or what a linear kernel swapped in for one (PackedLinear, Int4Linear, ...)
    if isinstance(module, nn.Linear) or type(module).__name__.endswith(("Linear", "ParallelOutput")):
        return "matmul"
    return None


def _timed_modules(module: nn.Module, skip: nn.Module | None) -> list[tuple[nn.Module, str]]:
    """The outermost modules of each kind under ``module`` (the LM head ``skip`` excluded)."""
    found = []
    for child in module.children():
        if child is skip:
            continue
        kind = _module_kind(child)
        found += [(child, kind)] if kind is not None else _timed_modules(child, skip)
    return found


def _instrument(engine: Any) -> Callable[[], None]:
    """Wrap the engine's phases and the model's modules with timers; returns the undo."""
    import heron.engine.model_runner as mr

    model, runner, undo = engine.model, engine.model_runner, []
    for mod, kind in _timed_modules(model, getattr(model, "lm_head", None)):
        mod.forward = _timed(kind, mod.forward)
        undo.append(lambda m=mod: delattr(m, "forward"))
    patches = [(engine.scheduler, "schedule", "schedule"), (runner, "plan", "input_prep"),
               (mr, "build_batch", "input_prep"), (runner.backend, "build_batch", "input_prep"),
               (model, "forward", "forward"), (model, "compute_logits", "lm_head"), (engine, "sampler", "sampling")]
    for module_name in ("heron_plugins.models.llama", "heron_plugins.models.gemma2"):
        mod = sys.modules.get(module_name)
        if mod is not None:
            patches += [(mod, "rotate_heads", "rotary"), (mod, "rotary_tables", "rotary")]
    for obj, attr, name in patches:
        orig = getattr(obj, attr)
        setattr(obj, attr, _timed(name, orig))
        undo.append(lambda o=obj, a=attr, f=orig: setattr(o, a, f))
    return lambda: [u() for u in reversed(undo)]


def _fill(engine: Any, batch: int, prompt_len: int, tag: str) -> None:
    """Queue ``batch`` greedy requests and step until all of them decode."""
    from heron import SamplingParams

    params = SamplingParams(max_tokens=100_000, temperature=0.0, ignore_eos=True)
    gen = torch.Generator().manual_seed(batch)
    for i in range(batch):
        ids = torch.randint(100, 20_000, (prompt_len,), generator=gen).tolist()
        engine.add_request(f"{tag}-{i}", ids, params)
    while any(s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running) or \
            engine.scheduler.waiting:
        engine.step()


def _drain(engine: Any) -> None:
    for rid in list(engine.requests):
        engine.abort(rid)


def _native_stack(engine: Any, on: bool) -> None:
    """Let the decoder layers run as one C++ call where the model has one (heron_plugins.models.native_stack)
    or keep them on the Python modules (from the next step)."""
    from heron_plugins.models.native_stack import ENV

    os.environ[ENV] = "1" if on else "0"
    for module in engine.model.modules():
        module.__dict__.pop("_native", None)  # checked again at the next forward


def _uses_native(engine: Any) -> bool:
    return any(module.__dict__.get("_native") for module in engine.model.modules())


def _bare(engine: Any, batch: int, steps: int, prompt_len: int, tag: str) -> list[float]:
    _fill(engine, batch, prompt_len, tag)
    bare = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.step()
        bare.append(time.perf_counter() - start)
    _drain(engine)
    return bare


def profile_batch(engine: Any, batch: int, steps: int, prompt_len: int) -> dict[str, float]:
    """Median ms per decode step: bare with the native stack (where the model has one) and on the Python
    modules, then each phase from an instrumented run (on the modules: the timers wrap them)."""
    _native_stack(engine, True)
    native = _bare(engine, batch, steps, prompt_len, f"native{batch}")
    used = _uses_native(engine)
    _native_stack(engine, False)
    bare = _bare(engine, batch, steps, prompt_len, f"bare{batch}")
    _fill(engine, batch, prompt_len, f"prof{batch}")
    undo = _instrument(engine)
    rows: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(steps):
            _TIMES.clear()
            start = time.perf_counter()
            engine.step()
            total = time.perf_counter() - start
            step = {k: sum(v) for k, v in _TIMES.items()}
            inner = sum(step.get(k, 0.0) for k in ("matmul", "attention", "norm", "activation")) + \
                step.get("rotary", 0.0)
            step["forward_other"] = step.get("forward", 0.0) - inner
            outer = sum(step.get(k, 0.0) for k in ("schedule", "input_prep", "forward", "lm_head", "sampling"))
            step["bookkeeping"] = total - outer
            step["total_instrumented"] = total
            for k, v in step.items():
                rows[k].append(v)
    finally:
        undo()
        _drain(engine)
        _native_stack(engine, True)
    out = {k: statistics.median(v) * 1e3 for k, v in rows.items()}
    out["total_bare"] = statistics.median(bare) * 1e3
    out["total_native"] = statistics.median(native) * 1e3 if used else float("nan")
    return out


def single_stream(llm: Any, new_tokens: int, repeats: int) -> float:
    """Best-of-``repeats`` tok/s of ``LLM.generate`` on one prompt, ``new_tokens`` greedy tokens."""
    from heron import SamplingParams

    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    prompt = [{"prompt_token_ids": list(range(1000, 1032))}]
    llm.generate(prompt, SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        out = llm.generate(prompt, params, use_tqdm=False)
        best = max(best, len(out[0].outputs[0].token_ids) / (time.perf_counter() - start))
    return best


def _print(batch: int, ms: dict[str, float]) -> None:
    print(f"\n batch {batch}: {ms['total_native']:.2f} ms/step with the native stack "
          f"({batch * 1e3 / ms['total_native']:.1f} tok/s; nan: the model has none), {ms['total_bare']:.2f} ms on "
          f"the Python modules ({batch * 1e3 / ms['total_bare']:.1f} tok/s), {ms['total_instrumented']:.2f} ms "
          f"instrumented (modules)")
    for k in _ORDER:
        v = ms.get(k, 0.0)
        print(f"   {k:<14} {v:8.3f} ms  {100 * v / ms['total_instrumented']:5.1f} %", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--linear-kernel", default="onednn",
                    help="onednn (default: the dequantized bf16 GEMMs), auto, gguf, dense, ...")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128, help="new tokens of the single-stream run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    from heron import LLM

    llm = LLM(model=args.model, dtype=args.dtype, linear_kernel=args.linear_kernel)
    if args.threads:
        torch.set_num_threads(args.threads)  # after the engine, which sets its own
    engine = llm.engine
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {args.dtype}, "
          f"attention {engine.model_runner.backend.name}, linear {engine.linear_kernel}", flush=True)
    for batch in args.batch_sizes:
        profile_batch(engine, batch, 4, args.prompt_len)  # warm-up
        _print(batch, profile_batch(engine, batch, args.steps, args.prompt_len))
    tok_s = single_stream(llm, args.tokens, args.repeats)
    print(f"\n single stream (LLM.generate, batch 1, {args.tokens} tokens, {args.dtype}): {tok_s:.1f} tok/s")


if __name__ == "__main__":
    main()
