"""What the replayed model writes for each tool-call format of ``FORMATS.md``, and what must come back.

One :class:`Family` per distinct marker format (aliases share one: ``hermes`` covers
``qwen3_json``), plus the reasoning + tool pairs that real models use. ``special`` are the marker
texts that are special tokens in that model family's vocabulary (stripped by the default
``skip_special_tokens=True``), ``added`` those that are ordinary added tokens (Qwen's
``<tool_call>``/``<think>``). Every family also has the special token :data:`STRAY`, written
inside the text of the ``around`` case: it must never reach ``content``.

Each family has three cases: ``single`` (one call), ``parallel`` (two calls) and ``around``
(text before the call, and after it where the format lets text follow a call).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ("FAMILIES", "PARIS", "STRAY", "TOOLS", "Case", "Family")

STRAY = "<|reserved_special_token_7|>"
PARIS = {"city": "Paris", "days": 3}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
CALLS1 = [("get_weather", PARIS)]
CALLS2 = [("get_weather", PARIS), ("get_time", {})]
BEFORE, AFTER = f"Let me{STRAY} check.\n", "\nDone."


@dataclass(frozen=True)
class Case:
    """One scripted output: ``text`` (eos follows unless it ends with one) and the expected answer."""

    name: str
    text: str
    content: str | None
    calls: list[tuple[str, dict]]
    reasoning: str | None = None
    ids: list[str] | None = None  # expected tool-call ids when the format carries its own


@dataclass(frozen=True)
class Family:
    """One server: its parser flags, its vocabulary's marker tokens and its cases."""

    name: str
    tool_parser: str | None
    special: tuple[str, ...]
    added: tuple[str, ...] = ()
    reasoning_parser: str | None = None
    eos: tuple[str, ...] = ("<|im_end|>",)
    generation_prompt: str = "<|im_start|>assistant\n"
    cases: list[Case] = field(default_factory=list)

    @property
    def flags(self) -> list[str]:
        out = []
        if self.tool_parser:
            out += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_parser]
        if self.reasoning_parser:
            out += ["--reasoning-parser", self.reasoning_parser]
        return out


def _j(args: dict) -> str:
    return json.dumps(args)


def _family(name: str, call: Callable[[str, dict], str], special: tuple[str, ...], *, wrap: Callable[[str], str] = str,
            sep: str = "\n", after: bool = True, before: bool = True, ids: list[str] | None = None, **kw) -> Family:
    """The three standard cases of a format given how it writes one call and wraps a run of calls.

    ``after``: text may follow the calls; ``before``: text may precede them (when neither, the
    third case is text alone, with no call).
    """
    one = wrap(call("get_weather", PARIS))
    two = wrap(call("get_weather", PARIS) + sep + call("get_time", {}))
    cases = [Case("single", one, None, CALLS1, ids=ids[:1] if ids else None),
             Case("parallel", two, None, CALLS2, ids=ids)]
    if before:
        around = BEFORE + one + (AFTER if after else "")
        content = "Let me check." + ("\n\nDone." if after else "")
        cases.append(Case("around", around, content, CALLS1, ids=ids[:1] if ids else None))
    else:
        cases.append(Case("text_only", BEFORE + "No call needed.", "Let me check.\nNo call needed.", []))
    return Family(name, kw.pop("tool_parser", name), special, cases=cases, **kw)


def _py(name: str, args: dict) -> str:
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def _xml(name: str, args: dict, fn: str, param: str) -> str:
    params = "".join(param.format(k=k, v=v, t=str(isinstance(v, str)).lower()) for k, v in args.items())
    return fn.format(name=name, params=params)


DS_BEGIN, DS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DS_CALL, DS_CALL_END, DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
DS_MARKERS = (DS_BEGIN, DS_END, DS_CALL, DS_CALL_END, DS_SEP)
DS_EOS = ("<｜end▁of▁sentence｜>",)
KIMI = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>", "<|tool_call_end|>")
HARMONY = ("<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|call|>", "<|return|>", "<|constrain|>")
STEP3 = ("<｜tool_calls_begin｜>", "<｜tool_calls_end｜>", "<｜tool_call_begin｜>", "<｜tool_call_end｜>", "<｜tool_sep｜>")


def _harmony(name: str, args: dict) -> str:
    return f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{_j(args)}"


def _openai() -> Family:
    # gpt-oss stops on <|call|> (an eos token): one call closes the turn; a second call may follow
    # a first one that the next message's <|start|> ends.
    one = _harmony("get_weather", PARIS) + "<|call|>"
    two = _harmony("get_weather", PARIS) + "<|start|>assistant" + _harmony("get_time", {}) + "<|call|>"
    around = f"<|channel|>commentary<|message|>Let me{STRAY} check.<|end|><|start|>assistant" + one
    cases = [Case("single", one, None, CALLS1), Case("parallel", two, None, CALLS2),
             Case("around", around, "Let me check.", CALLS1)]
    return Family("openai", "openai", HARMONY, eos=("<|return|>", "<|call|>"), generation_prompt="<|start|>assistant",
                  cases=cases)


def _pairs() -> list[Family]:
    """Reasoning + tool parser pairs as real models use them (each with a stray special token)."""
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": ' + _j(PARIS) + "}\n</tool_call>"
    qwen3 = Family("qwen3+hermes", "hermes", (), ("<think>", "</think>", "<tool_call>", "</tool_call>"),
                   reasoning_parser="qwen3", cases=[
                       Case("think_call", f"<think>\nThe user{STRAY} wants Paris.\n</think>\n\n{hermes}", None, CALLS1,
                            reasoning="\nThe user wants Paris.\n"),
                       Case("think_answer", "<think>\nEasy.\n</think>\n\nIt is sunny.", "\n\nIt is sunny.", [],
                            reasoning="\nEasy.\n")])
    ds = DS_BEGIN + DS_CALL + "function" + DS_SEP + "get_weather\n```json\n" + _j(PARIS) + "\n```" + DS_CALL_END + DS_END
    r1 = Family("deepseek_r1+deepseek_v3", "deepseek_v3", DS_MARKERS, ("<think>", "</think>"),
                reasoning_parser="deepseek_r1", eos=DS_EOS, generation_prompt="<｜Assistant｜><think>\n", cases=[
                    Case("think_call", f"The user{STRAY} wants Paris.\n</think>\n\n{ds}", None, CALLS1,
                         reasoning="The user wants Paris.\n"),
                    Case("think_answer", "Easy.\n</think>\n\nIt is sunny.", "\n\nIt is sunny.", [], reasoning="Easy.\n")])
    think = "<|channel|>analysis<|message|>The user wants Paris.<|end|><|start|>assistant"
    gptoss = Family("openai_gptoss+openai", "openai", HARMONY, reasoning_parser="openai_gptoss",
                    eos=("<|return|>", "<|call|>"), generation_prompt="<|start|>assistant", cases=[
                        Case("think_call", think + _harmony("get_weather", PARIS) + "<|call|>", None, CALLS1,
                             reasoning="The user wants Paris."),
                        Case("think_answer", think + "<|channel|>final<|message|>It is sunny.<|return|>", "It is sunny.",
                             [], reasoning="The user wants Paris.")])
    magistral = Family("mistral+mistral", "mistral", ("[TOOL_CALLS]", "[ARGS]", "[THINK]", "[/THINK]"),
                       reasoning_parser="mistral", eos=("</s>",), cases=[
                           Case("think_call", f"[THINK]The user{STRAY} wants Paris.[/THINK][TOOL_CALLS]get_weather[ARGS]"
                                + _j(PARIS), None, CALLS1, reasoning="The user wants Paris.")])
    return [qwen3, r1, gptoss, magistral]


def _families() -> list[Family]:
    hermes = lambda n, a: '<tool_call>\n{"name": "' + n + '", "arguments": ' + _j(a) + "}\n</tool_call>"  # noqa: E731
    json_call = lambda n, a: '{"name": "' + n + '", "arguments": ' + _j(a) + "}"  # noqa: E731
    qcoder = lambda n, a: _xml(n, a, "<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>",  # noqa: E731
                               "<parameter={k}>\n{v}\n</parameter>\n")
    return [
        _family("hermes", hermes, ("<tool_call>", "</tool_call>")),  # Hermes 2 Pro: reserved special tokens
        _family("llama3_json", lambda n, a: '{"name": "' + n + '", "parameters": ' + _j(a) + "}", ("<|python_tag|>",),
                wrap=lambda s: "<|python_tag|>" + s, sep="; ", after=False, eos=("<|eom_id|>", "<|eot_id|>")),
        _family("pythonic", _py, (), wrap=lambda s: "[" + s + "]", sep=", ", after=False, before=False),
        _family("llama4_pythonic", _py, ("<|python_start|>", "<|python_end|>"),
                wrap=lambda s: "<|python_start|>[" + s + "]<|python_end|>", sep=", "),
        _family("olmo3", _py, ("<function_calls>", "</function_calls>"),
                wrap=lambda s: "<function_calls>\n" + s + "\n</function_calls>"),
        _family("lfm2", _py, ("<|tool_call_start|>", "<|tool_call_end|>"),
                wrap=lambda s: "<|tool_call_start|>[" + s + "]<|tool_call_end|>", sep=", "),
        _family("mistral", lambda n, a: f"[TOOL_CALLS]{n}[ARGS]{_j(a)}", ("[TOOL_CALLS]", "[ARGS]"), sep="",
                after=False, eos=("</s>",)),
        _family("granite", json_call, ("<|tool_call|>",), wrap=lambda s: "<|tool_call|>[" + s + "]", sep=", ",
                after=False, eos=("<|end_of_text|>",)),
        _family("granite4", hermes, ("<tool_call>", "</tool_call>"), eos=("<|end_of_text|>",)),
        _family("granite-20b-fc", lambda n, a: "<function_call> " + json_call(n, a), (), sep=" ", after=False,
                added=("<function_call>",)),
        _family("internlm", lambda n, a: "<|action_start|><|plugin|>\n" + json_call(n, a) + "<|action_end|>",
                ("<|action_start|>", "<|plugin|>", "<|action_end|>")),
        _family("jamba", json_call, ("<tool_calls>", "</tool_calls>"), wrap=lambda s: "<tool_calls>[" + s + "]</tool_calls>",
                sep=", "),
        _family("hunyuan_a13b", json_call, ("<tool_calls>", "</tool_calls>"),
                wrap=lambda s: "<tool_calls>[" + s + "]</tool_calls>", sep=", "),
        _family("deepseek_v3", lambda n, a: f"{DS_CALL}function{DS_SEP}{n}\n```json\n{_j(a)}\n```{DS_CALL_END}", DS_MARKERS,
                wrap=lambda s: DS_BEGIN + s + DS_END, eos=DS_EOS),
        _family("deepseek_v31", lambda n, a: f"{DS_CALL}{n}{DS_SEP}{_j(a)}{DS_CALL_END}", DS_MARKERS,
                wrap=lambda s: DS_BEGIN + s + DS_END, sep="", eos=DS_EOS),
        _family("deepseek_v32", lambda n, a: _xml(
            n, a, '<｜DSML｜invoke name="{name}">\n{params}</｜DSML｜invoke>',
            '<｜DSML｜parameter name="{k}" string="{t}">{v}</｜DSML｜parameter>\n'), ("｜DSML｜",),
                wrap=lambda s: "<｜DSML｜function_calls>\n" + s + "\n</｜DSML｜function_calls>", after=False, eos=DS_EOS),
        _family("kimi_k2", lambda n, a: f"<|tool_call_begin|>functions.{n}:{0 if n == 'get_weather' else 1}"
                f"<|tool_call_argument_begin|>{_j(a)}<|tool_call_end|>", KIMI,
                wrap=lambda s: KIMI[0] + s + KIMI[1], ids=["functions.get_weather:0", "functions.get_time:1"]),
        _family("glm45", lambda n, a: _xml(n, a, "<tool_call>{name}\n{params}</tool_call>",
                                           "<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n"),
                ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"),
                eos=("<|user|>", "<|endoftext|>")),
        _family("qwen3_coder", qcoder, (), added=("<tool_call>", "</tool_call>")),
        _family("seed_oss", lambda n, a: _xml(n, a, "<seed:tool_call>\n<function={name}>\n{params}</function>\n</seed:tool_call>",
                                              "<parameter={k}>{v}</parameter>\n"),
                ("<seed:tool_call>", "</seed:tool_call>"), eos=("<seed:eos>",)),
        _family("minimax_m2", lambda n, a: _xml(n, a, '<invoke name="{name}">\n{params}</invoke>',
                                                '<parameter name="{k}">{v}</parameter>\n'),
                ("<minimax:tool_call>", "</minimax:tool_call>"),
                wrap=lambda s: "<minimax:tool_call>\n" + s + "\n</minimax:tool_call>", eos=("[e~[",)),
        _family("step3", lambda n, a: _xml(n, a, f'{STEP3[2]}function{STEP3[4]}<steptml:invoke name="{{name}}">{{params}}'
                                                 f"</steptml:invoke>{STEP3[3]}",
                                           '<steptml:parameter name="{k}">{v}</steptml:parameter>'), STEP3,
                wrap=lambda s: STEP3[0] + s + STEP3[1]),
        _family("xlam", json_call, (), wrap=lambda s: "```json\n[" + s + "]\n```", sep=", ", after=False),
        _family("phi4_mini_json", json_call, (), wrap=lambda s: "functools[" + s + "]", sep=", ", after=False,
                eos=("<|end|>",)),
        _family("longcat", lambda n, a: "<longcat_tool_call>" + json_call(n, a) + "</longcat_tool_call>",
                ("<longcat_tool_call>", "</longcat_tool_call>")),
        _family("ernie45", hermes, (), added=("<tool_call>", "</tool_call>")),
        _family("functiongemma", lambda n, a: "<start_function_call>call:" + n + "{" + ",".join(
            f"{k}:<escape>{v}<escape>" if isinstance(v, str) else f"{k}:{v}" for k, v in a.items())
            + "}<end_function_call>", ("<start_function_call>", "<end_function_call>", "<escape>"), sep="",
                eos=("<end_of_turn>",)),
        _family("gigachat3", lambda n, a: "function call<|role_sep|>\n" + json_call(n, a), ("<|role_sep|>",),
                after=False, sep=""),
        _family("apertus", lambda n, a: '{"' + n + '": ' + _j(a) + "}", ("<|tools_prefix|>", "<|tools_suffix|>"),
                wrap=lambda s: "<|tools_prefix|>[" + s + "]<|tools_suffix|>", sep=", "),
        _openai(),
    ]


#: every server the end-to-end suite starts, by name
FAMILIES: dict[str, Family] = {f.name: f for f in [*_families(), *_pairs()]}
