"""Turn ``compare.py``'s results into markdown tables (with heron / baseline ratios and issue 19's
targets, each marked met or not) and a plot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

SERVERS = ("heron", "heron int4", "llama-server", "llama-cpp-python")


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def offline_table(res: dict[str, Any]) -> list[str]:
    flops = res["machine"]["bf16_gflops"] * 1e9
    params = res["model"]["parameters"]
    heron = res.get("heron_offline")
    hf = res.get("transformers") or []
    best_hf = max(hf, key=lambda r: r["tok_s"]) if hf else None
    rows = ["| engine | setting | output tok/s | heron / it | of bf16 compute limit |",
            "|---|---|---:|---:|---:|"]

    def limit(tok_s: float) -> str:
        return f"{100 * tok_s * 2 * params / flops:.1f}%"

    def rounds(r: dict[str, Any]) -> str:
        return f" (best of rounds: {', '.join(f'{x:.1f}' for x in r['rounds'])})" if len(r.get("rounds", ())) > 1 else ""

    if heron:
        kernel = f", {heron['linear_kernel']} linears" if heron.get("linear_kernel") else ""
        rows.append(f"| heron (offline LLM) | {heron['dtype']}{kernel}, max_num_seqs {heron['max_num_seqs']} | "
                    f"{heron['output_tok_s']:.1f}{rounds(heron)} | 1.00x | {limit(heron['output_tok_s'])} |")
    for r in sorted(hf, key=lambda r: -r["tok_s"]):
        tag = " **(best)**" if r is best_hf else ""
        rows.append(f"| transformers generate{tag} | {r['dtype']}, batch {r['batch_size']} | {r['tok_s']:.1f}"
                    f"{rounds(r)} | {_ratio(heron and heron['output_tok_s'], r['tok_s'])} | {limit(r['tok_s'])} |")
    return rows


def serving_table(res: dict[str, Any]) -> list[str]:
    serving = res.get("serving", {})
    present = [s for s in SERVERS if serving.get(s)]
    levels = sorted({int(c) for s in present for c in serving[s]})
    head = ["concurrency", "requests"]
    for s in present:
        head += [f"{s} tok/s"] + ([f"heron / {s}"] if not s.startswith("heron") else [])
    for s in present:
        head += [f"{s} TTFT p50 (s)"] + ([f"heron / {s}"] if not s.startswith("heron") else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for c in levels:
        cells = [str(c), str(next((serving[s][str(c)]["num_requests"] for s in present if str(c) in serving[s]), "-"))]
        h = serving.get("heron", {}).get(str(c))
        for s in present:
            r = serving[s].get(str(c))
            cells.append(_f(r and r["output_tok_s"]))
            if not s.startswith("heron"):
                cells.append(_ratio(h and h["output_tok_s"], r and r["output_tok_s"]))
        for s in present:
            r = serving[s].get(str(c))
            cells.append(_f(r and r["ttft_ms"]["p50"] / 1000, ".2f"))
            if not s.startswith("heron"):
                cells.append(_ratio(h and h["ttft_ms"]["p50"], r and r["ttft_ms"]["p50"]))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def single_stream_table(res: dict[str, Any]) -> list[str]:
    single = res.get("single_stream", {})
    ref = single.get("heron serve", {}).get("decode_tok_s")
    llama = single.get("llama-server", {}).get("decode_tok_s")
    rows = ["| engine | decode tok/s | TTFT (ms) | heron serve / it | it / llama-server |", "|---|---:|---:|---:|---:|"]
    for name, r in sorted(single.items(), key=lambda kv: (not kv[0].startswith("heron"), kv[0])):
        rows.append(f"| {name} | {_f(r.get('decode_tok_s'))} | {_f(r.get('ttft_ms'))} | "
                    f"{_ratio(ref, r.get('decode_tok_s'))} | {_ratio(r.get('decode_tok_s'), llama)} |")
    return rows


@dataclass(slots=True)
class Target:
    """One of issue 19's targets: heron's figure against the baseline's, and the goal for their ratio."""

    name: str
    short: str  # the plot's label
    heron: str  # the figures, formatted (with units)
    baseline: str
    ratio: float | None  # heron / baseline; None: not measured
    goal: float  # the ratio to reach
    at_most: bool = False  # the ratio must stay at or below ``goal`` (memory, TTFT), else reach it
    yes_no: bool = False  # a yes/no target: ratio 1.0 for yes, 0.0 for no

    @property
    def met(self) -> bool | None:
        if self.ratio is None or math.isnan(self.ratio):
            return None
        return self.ratio <= self.goal if self.at_most else self.ratio >= self.goal

    @property
    def score(self) -> float | None:
        """How far past the goal (>= 1 = met), for the plot."""
        if self.met is None or not self.ratio:
            return None
        return self.goal / self.ratio if self.at_most else self.ratio / self.goal


def _pair(h: float | None, b: float | None, fmt: str, unit: str) -> tuple[str, str, float | None]:
    ratio = h / b if h and b and not math.isnan(h) and not math.isnan(b) else None
    return (f"{_f(h, fmt)} {unit}" if h else "-"), (f"{_f(b, fmt)} {unit}" if b else "-"), ratio


def targets(res: dict[str, Any]) -> list[Target]:
    """Issue 19's targets, each with this run's figures (or '-' where the run did not measure them)."""
    single, serving = res.get("single_stream", {}), res.get("serving", {})
    out = [Target("single-stream decode, `heron serve` (defaults) vs llama-server", "single-stream decode",
                  *_pair(single.get("heron serve", {}).get("decode_tok_s"),
                         single.get("llama-server", {}).get("decode_tok_s"), ".1f", "tok/s"), 1.0)]
    mem = res.get("memory") or {}
    engines = mem.get("engines", {})
    same = f"{mem['slots']} slots, {mem['ctx']}-token context" if mem else "same slots and context"
    out.append(Target(f"peak resident memory of the process tree, {same}, vs llama-server", "peak memory",
                      *_pair(engines.get("heron", {}).get("hwm"), engines.get("llama-server", {}).get("hwm"),
                             ".0f", "MiB"), 2.0, at_most=True))
    h16, l16 = serving.get("heron", {}).get("16", {}), serving.get("llama-server", {}).get("16", {})
    out.append(Target("concurrency 16 output tok/s vs llama-server", "concurrency 16 tok/s",
                      *_pair(h16.get("output_tok_s"), l16.get("output_tok_s"), ".1f", "tok/s"), 2.5))
    out.append(Target("concurrency 16 TTFT p50 vs llama-server (no worse)", "concurrency 16 TTFT p50",
                      *_pair(h16.get("ttft_ms", {}).get("p50"), l16.get("ttft_ms", {}).get("p50"), ".0f", "ms"),
                      1.0, at_most=True))
    lp = res.get("long_prompt", {})
    tokens = next((f" ({r['prompt_tokens']} tokens)" for r in lp.values() if r.get("prompt_tokens")), "")
    out.append(Target(f"long-prompt TTFT p50{tokens} vs llama-server (ahead)", "long-prompt TTFT p50",
                      *_pair(lp.get("heron", {}).get("ttft_ms", {}).get("p50"),
                             lp.get("llama-server", {}).get("ttft_ms", {}).get("p50"), ".0f", "ms"), 1.0, at_most=True))
    hf = res.get("transformers") or []
    best = max(hf, key=lambda r: r["tok_s"]) if hf else {}
    out.append(Target("offline tok/s vs transformers' best" + (f" ({best['dtype']}, batch {best['batch_size']})"
                                                               if best else ""), "offline vs transformers",
                      *_pair((res.get("heron_offline") or {}).get("output_tok_s"), best.get("tok_s"), ".1f",
                             "tok/s"), 2.0))
    spec = res.get("speculative") or {}
    runs = spec.get("runs", {})
    out.append(Target("speculative (ngram) single-stream tok/s vs without, copy workload", "speculative speed-up",
                      *_pair(runs.get("ngram", {}).get("tok_s"), runs.get("without", {}).get("tok_s"), ".1f",
                             "tok/s"), 1.5))
    same = spec.get("identical")
    out.append(Target("speculative greedy tokens identical to without", "speculative identical",
                      {True: "yes", False: "no"}.get(same, "-"),
                      "-", None if same is None else float(same), 1.0, yes_no=True))
    return out


def targets_table(res: dict[str, Any]) -> list[str]:
    rows = ["| target | heron | baseline | heron / baseline | goal | met |", "|---|---:|---:|---:|---:|---|"]
    for t in targets(res):
        ratio = "-" if t.ratio is None or t.yes_no else f"{t.ratio:.2f}x"
        goal = "yes" if t.yes_no else f"{'<=' if t.at_most else '>='} {t.goal:.2f}x"
        met = {True: "**met**", False: "not yet", None: "not measured"}[t.met]
        rows.append(f"| {t.name} | {t.heron} | {t.baseline} | {ratio} | {goal} | {met} |")
    return rows


def long_prompt_table(res: dict[str, Any]) -> list[str]:
    lp = res.get("long_prompt") or {}
    ref = lp.get("heron", {}).get("ttft_ms", {}).get("p50")
    rows = ["| engine | prompt tokens | requests | TTFT p50 (ms) | TTFT max (ms) | heron / it |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, r in lp.items():
        rows.append(f"| {name} | {r['prompt_tokens']} | {r['completed']} of {r['requests']} | "
                    f"{_f(r['ttft_ms']['p50'], '.0f')} | {_f(r['ttft_ms']['max'], '.0f')} | "
                    f"{_ratio(ref, r['ttft_ms']['p50'])} |")
    return rows if lp else []


def memory_table(res: dict[str, Any]) -> list[str]:
    """The memory part (same slots and context), then each server after the serving levels."""
    mem = res.get("memory") or {}
    rows = ["| server | setting | idle (MiB) | after (MiB) | sampled peak (MiB) | peak, VmHWM sum (MiB) | "
            "heron / it (peak) |", "|---|---|---:|---:|---:|---:|---:|"]
    engines = mem.get("engines", {})
    ref = engines.get("heron", {}).get("hwm")
    for name, m in engines.items():
        rows.append(f"| {name} | {mem['slots']} slots, {mem['ctx']}-token context, {mem['requests']} streams x "
                    f"{mem['output_len']} tokens | {m['idle']:.0f} | {m['rss']:.0f} | {m['sampled_peak']:.0f} | "
                    f"{m['hwm']:.0f} | {_ratio(ref, m['hwm'])} |")
    seqs = res.get("workload", {}).get("max_num_seqs")
    for name in SERVERS:
        by_c = res.get("serving", {}).get(name) or {}
        levels = sorted(by_c, key=int)
        if name.startswith("heron"):  # one server for all levels: its memory after the last
            levels = levels[-1:]
        for c in levels:
            m = by_c[c].get("memory_mib")
            if not m:
                continue
            setting = (f"after levels {', '.join(sorted(by_c, key=int))} (--max-num-seqs {seqs})"
                       if name.startswith("heron") else f"after level {c} (restarted, -np {c})")
            rows.append(f"| {name} | {setting} | {m['idle']:.0f} | {m['rss']:.0f} | {m['sampled_peak']:.0f} | "
                        f"{m['hwm']:.0f} | - |")
    return rows if len(rows) > 2 else []


def speculative_table(res: dict[str, Any]) -> list[str]:
    spec = res.get("speculative") or {}
    runs = spec.get("runs", {})
    base = runs.get("without", {}).get("tok_s")
    rows = ["| `heron serve` | tok/s | tokens | seconds | drafts | mean acceptance length | vs without |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        label = "without speculation" if name == "without" else f"`--speculative-config` {name}"
        rows.append(f"| {label} | {r['tok_s']:.1f} | {r['tokens']} | {r['seconds']:.1f} | {r['drafts']:.0f} | "
                    f"{_f(r.get('mean_acceptance_length'), '.2f')} | {_ratio(r['tok_s'], base)} |")
    return rows if runs else []


def _legacy_memory(res: dict[str, Any]) -> list[str]:
    """Results of runs before the memory part: one line per server (kept for --render of old files)."""
    lines = []
    for key, how in (("heron_serve_memory_mib", ""), ("heron_int4_serve_memory_mib", " (int4)")):
        mem = res.get(key)
        if mem:
            lines += ["", f"`heron serve`{how} resident memory after the serving runs: {mem[0]:.0f} MiB "
                      f"(peak {mem[1]:.0f} MiB)."]
    return lines


def markdown(res: dict[str, Any]) -> str:
    w = res["workload"]
    lines = ["### Targets (issue 19)", "", "Ratios are heron / baseline.", "", *targets_table(res), "",
             f"### Offline throughput: {w['num_prompts']} prompts x {w['input_len']} in / {w['output_len']} out "
             "(EOS ignored)", "", *offline_table(res), "",
             f"### Serving: streaming /v1/completions, {w['input_len']} in / {w['output_len']} out per request", "",
             "Ratios are heron / baseline: above 1 is better for tok/s, below 1 is better for TTFT.", "",
             *serving_table(res), "",
             f"### Single stream: {w['single_output_len']} output tokens, one request at a time", "",
             *single_stream_table(res)]
    if long := long_prompt_table(res):
        lines += ["", f"### Long prompt: time to first token, {w.get('long_prompt_len')}-token prompts, max_tokens 1, "
                  "one at a time, no two sharing a prefix", "", *long]
    if mem := memory_table(res):
        lines += ["", "### Resident memory: each server's whole process tree (VmRSS summed)", "",
                  "The first rows start both servers with the same parallel slots and context length and run "
                  "one level of that many streams; \"peak\" sums each process's own peak (VmHWM, loading "
                  "included), \"sampled peak\" is the largest sum seen while serving (every 50 ms in the first rows, "
                  "0.2 s in the others).", "",
                  *mem]
    if spec := speculative_table(res):
        s = res["speculative"]
        same = {True: "identical to those without.", None: "not compared (one run failed).",
                False: f"not identical to those without: the outputs first differ at tokens "
                       f"{s.get('first_difference')} of {s.get('lengths')}."}[s.get("identical")]
        how = (f"`heron serve` without and with `--speculative-config '{json.dumps(s['speculative_config'])}'` "
               f"up side by side, each prompt sent to one then the other (the order swapped every pass), "
               f"{s['rounds']} passes, each server after one warm-up request"
               if s.get("interleaved") else
               f"`heron serve` without, then with `--speculative-config '{json.dumps(s['speculative_config'])}'` "
               f"(each after one warm-up request)")
        lines += ["", f"### Speculative decoding: copy workload (benchmarks/spec_decode.py's prompts), "
                  f"{s['prompts']} greedy requests of up to {s['max_tokens']} tokens, one at a time", "",
                  f"{how}; greedy tokens {same}", "", *spec]
    lines += _legacy_memory(res)
    other = res.get("other_cpu")
    if other:
        lines += ["", f"CPU share taken by other processes during each part ({res['machine']['physical_cores']} cores "
                  "= 2.00): " + ", ".join(f"{k} {v:.2f}" for k, v in other.items()) + "."]
    if res.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in res["notes"]]
    return "\n".join(lines) + "\n"


_GENERATED = ("Machine", "Command", "Results", "Measuring one engine yourself")


def kept_sections(text: str) -> str:
    """The ``## `` sections of an existing page that compare.py does not write, in order."""
    kept, keep, fenced = [], False, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("# "):
            keep = False
        elif not fenced and line.startswith("## "):
            keep = line[3:].strip() not in _GENERATED
        if keep:
            kept.append(line)
    body = "".join(kept).rstrip()
    return body + "\n\n" if body else ""


def plot(res: dict[str, Any], path: str) -> None:
    """Throughput and TTFT against concurrency (top), each target's standing (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 7.6))
    grid = fig.add_gridspec(2, 2, height_ratios=(4.2, 3.0))
    _plot_serving(fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), res)
    _plot_targets(fig.add_subplot(grid[1, :]), res)
    fig.suptitle(f"{res['model']['name']} on {res['machine']['cpu']} ({res['machine']['physical_cores']} cores)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_serving(ax1: Any, ax2: Any, res: dict[str, Any]) -> None:
    import matplotlib.ticker

    for color, name in enumerate(SERVERS):
        by_c = res.get("serving", {}).get(name)
        if not by_c:
            continue
        cs = sorted(int(c) for c in by_c)
        ax1.plot(cs, [by_c[str(c)]["output_tok_s"] for c in cs], marker="o", color=f"C{color}", label=name)
        ax2.plot(cs, [by_c[str(c)]["ttft_ms"]["p50"] / 1000 for c in cs], marker="o", color=f"C{color}", label=name)
    if res.get("heron_offline"):
        ax1.axhline(res["heron_offline"]["output_tok_s"], ls="--", color="C0", alpha=0.5, label="heron offline")
    if res.get("transformers"):
        best = max(res["transformers"], key=lambda r: r["tok_s"])
        ax1.axhline(best["tok_s"], ls=":", color="gray",
                    label=f"transformers offline ({best['dtype']}, batch {best['batch_size']})")
    levels = res["workload"]["concurrency"]
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.minorticks_off()
        ax.set_xlabel("concurrent requests")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("output tokens/s")
    ax1.set_title("Throughput")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.set_ylim(bottom=0)
    ax2.set_ylabel("time to first token, p50 (s)")
    ax2.set_title("Time to first token")


def _plot_targets(ax: Any, res: dict[str, Any]) -> None:
    """One bar per measured ratio target: how far past its goal (1 = just met), log scale."""
    shown = [t for t in targets(res) if t.score is not None and not t.yes_no]
    names = [f"{t.short}: {t.ratio:.2f}x ({'<=' if t.at_most else '>='} {t.goal:g}x)" for t in shown]
    ax.barh(range(len(shown)), [t.score for t in shown], color=["C2" if t.met else "C3" for t in shown])
    ax.set_yticks(range(len(shown)), names, fontsize=7.5)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("target standing: goal reached at 1 (green met, red not yet)")
    ax.set_title("Targets (heron / baseline against the goal)")
    ax.grid(True, axis="x", alpha=0.3)
