"""Turn ``compare.py``'s results into markdown tables (with heron / baseline ratios) and a plot."""

from __future__ import annotations

import math
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

    if heron:
        kernel = f", {heron['linear_kernel']} linears" if heron.get("linear_kernel") else ""
        rows.append(f"| heron (offline LLM) | {heron['dtype']}{kernel}, max_num_seqs {heron['max_num_seqs']} | "
                    f"{heron['output_tok_s']:.1f} | 1.00x | {limit(heron['output_tok_s'])} |")
    for r in sorted(hf, key=lambda r: -r["tok_s"]):
        tag = " **(best)**" if r is best_hf else ""
        rows.append(f"| transformers generate{tag} | {r['dtype']}, batch {r['batch_size']} | {r['tok_s']:.1f} | "
                    f"{_ratio(heron and heron['output_tok_s'], r['tok_s'])} | {limit(r['tok_s'])} |")
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


def targets(res: dict[str, Any]) -> list[str]:
    """Where this run stands against issue 8's targets (only those it has the numbers for)."""
    out = []
    heron, hf = res.get("heron_offline"), res.get("transformers")
    if heron and hf:
        r = heron["output_tok_s"] / max(x["tok_s"] for x in hf)
        out.append(f"offline >= 1.5x transformers' best: {r:.2f}x ({'met' if r >= 1.5 else 'not yet'})")
    h16 = res.get("serving", {}).get("heron", {}).get("16")
    l16 = res.get("serving", {}).get("llama-server", {}).get("16")
    if h16 and l16:
        r = h16["output_tok_s"] / l16["output_tok_s"]
        ttft = h16["ttft_ms"]["p50"] <= l16["ttft_ms"]["p50"]
        out.append(f"concurrency 16 >= 1.5x llama-server with TTFT p50 no worse: {r:.2f}x, TTFT "
                   f"{h16['ttft_ms']['p50'] / 1000:.2f} s vs {l16['ttft_ms']['p50'] / 1000:.2f} s "
                   f"({'met' if r >= 1.5 and ttft else 'not yet'})")
    ls = res.get("single_stream", {}).get("llama-server")
    for name, how in (("heron serve", "default kernels"), ("heron int4 serve", "--linear-kernel int4")):
        hs = res.get("single_stream", {}).get(name)
        if hs and ls:
            r = hs["decode_tok_s"] / ls["decode_tok_s"]
            out.append(f"single stream >= 0.5x llama-server's decode tok/s ({how}): {r:.2f}x, "
                       f"{hs['decode_tok_s']:.1f} vs {ls['decode_tok_s']:.1f} tok/s ({'met' if r >= 0.5 else 'not yet'})")
    for key, how in (("heron_serve_memory_mib", "default kernels"), ("heron_int4_serve_memory_mib", "int4")):
        mem = res.get(key)
        if mem:
            gb = mem[1] * 2**20 / 1e9
            out.append(f"`heron serve` resident memory < 1.5 GB ({how}): {gb:.2f} GB peak "
                       f"({'met' if gb < 1.5 else 'not yet'})")
    return ["Issue 8's targets, as this run stands:", ""] + [f"- {t}" for t in out] + [""] if out else []


def markdown(res: dict[str, Any]) -> str:
    w = res["workload"]
    lines = [*targets(res),f"### Offline throughput: {w['num_prompts']} prompts x {w['input_len']} in / {w['output_len']} out "
             "(EOS ignored)", "", *offline_table(res), "",
             f"### Serving: streaming /v1/completions, {w['input_len']} in / {w['output_len']} out per request", "",
             "Ratios are heron / baseline: above 1 is better for tok/s, below 1 is better for TTFT.", "",
             *serving_table(res), "",
             f"### Single stream: {w['single_output_len']} output tokens, one request at a time", "",
             *single_stream_table(res)]
    for key, how in (("heron_serve_memory_mib", ""), ("heron_int4_serve_memory_mib", " (int4)")):
        mem = res.get(key)
        if mem:
            lines += ["", f"`heron serve`{how} resident memory after the serving runs: {mem[0]:.0f} MiB "
                      f"(peak {mem[1]:.0f} MiB)."]
    other = res.get("other_cpu")
    if other:
        lines += ["", f"CPU share taken by other processes during each part ({res['machine']['physical_cores']} cores "
                  "= 2.00): " + ", ".join(f"{k} {v:.2f}" for k, v in other.items()) + "."]
    if res.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in res["notes"]]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    fig.suptitle(f"{res['model']['name']} on {res['machine']['cpu']} ({res['machine']['physical_cores']} cores)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
