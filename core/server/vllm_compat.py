"""vLLM command lines for ``heron serve``: vLLM's flag names, spellings and YAML keys.

:func:`add_vllm_arguments` teaches the serve parser what a ``vllm serve`` command line contains:
``--dtype half``, ``--max-model-len 32k``, ``--model NAME``, ``--no-<flag>``, underscores in flag
names, ``--json-flag.key value``, every flag of :mod:`heron.server.vllm_flags` (hidden from
``--help``), and a did-you-mean for flags neither heron nor vLLM has. After parsing,
``settings_from_args`` hands the vLLM-only flags and YAML keys to :func:`apply_vllm_options`: one
warning line per flag that has no effect here, aliases become heron settings, and flags for
features heron does not have yet stop the command with status 2, naming each of them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from heron.server.vllm_flags import VLLM_ATTENTION_BACKENDS, VLLM_FLAGS, VllmFlag

__all__ = ("add_vllm_arguments", "apply_vllm_options", "attention_backend", "canonical_dtype", "given_options",
           "human_int", "model_len", "split_config")

logger = logging.getLogger("heron.serve")

#: vLLM's ``--dtype`` values and the name heron uses for each
_DTYPES = {"auto": "auto", "half": "float16", "float16": "float16", "bfloat16": "bfloat16",
           "float": "float32", "float32": "float32"}
_HUMAN = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
#: argparse keywords per value kind of a table flag (JSON stays text: nothing here reads it)
_KINDS: dict[str, dict[str, Any]] = {
    "b": {"action": argparse.BooleanOptionalAction}, "i": {"type": int}, "f": {"type": float},
    "s": {}, "j": {}, "l": {"nargs": "+"}, "o": {"nargs": "?", "const": "true"},
}
#: vLLM's older ``--task`` values as heron's --runner / --convert
_TASKS = {"generate": {"runner": "generate"}, "embed": {"runner": "pooling", "convert": "embed"},
          "embedding": {"runner": "pooling", "convert": "embed"}, "auto": {},
          "classify": {"runner": "pooling", "convert": "classify"},
          "score": {"runner": "pooling", "convert": "classify"}}


def canonical_dtype(text: str) -> str:
    """vLLM's ``--dtype`` value as heron names it: ``half`` -> ``float16``, ``float`` -> ``float32``."""
    name = str(text).strip().lower()
    if name not in _DTYPES:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(_DTYPES)})")
    return _DTYPES[name]


def human_int(text: str | int) -> int:
    """vLLM's readable integers: ``32k`` = 32000, ``32K`` = 32768, ``1m`` = 10**6, ``4096`` = 4096."""
    if isinstance(text, int):
        return text
    value = str(text).strip()
    try:
        if m := _HUMAN.fullmatch(value):
            number, suffix = m.groups()
            power = "kmgt".index(suffix.lower()) + 1
            return int(float(number) * 1000**power) if suffix.islower() else int(number) * 1024**power
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use e.g. 4096, 32k (32000) "
                                         "or 32K (32768)") from None


def model_len(text: str | int) -> int | None:
    """``--max-model-len``: a readable integer, or ``auto`` / ``-1`` for the model's own length."""
    return None if str(text).strip().lower() in ("auto", "-1") else human_int(text)


def add_vllm_arguments(p: argparse.ArgumentParser) -> None:
    """Make ``p`` (heron serve's parser, after ``add_serve_arguments``) accept vLLM's command lines."""
    known = p._option_string_actions
    p.usage = p.usage or "%(prog)s [MODEL] [OPTIONS]"  # the full list would bury an error message
    for option, kind in (("--dtype", canonical_dtype), ("--max-model-len", model_len),
                         ("--max-num-batched-tokens", human_int)):
        if option in known:
            known[option].type, known[option].choices = kind, None
    if "--model" not in known:
        p.add_argument("--model", dest="model", default=argparse.SUPPRESS,
                       help="the model, as the positional argument (vLLM's older spelling)")
    for option, action in list(known.items()):  # vLLM's on/off flags all have a --no- form
        if isinstance(action, argparse._StoreTrueAction) and option.startswith("--") \
                and f"--no-{option[2:]}" not in known:
            p.add_argument(f"--no-{option[2:]}", dest=action.dest, action="store_false",
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    group = p.add_argument_group("vLLM flags", "vLLM's other engine and server flags are accepted: each either "
                                 "has no effect here (one warning says why) or, for features heron does not "
                                 "have yet, is an error unless given its default (docs/serving.md)")
    for flag in VLLM_FLAGS.values():
        if flag.flag in known:
            continue  # heron implements it under vLLM's name
        names = [n for n in (flag.flag, *flag.short) if n not in known]
        group.add_argument(*names, dest=flag.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                           **_KINDS[flag.value])
    _install_parsing(p)


def _install_parsing(p: argparse.ArgumentParser) -> None:
    """vLLM's spellings before parsing, and a did-you-mean for what is left unrecognised after it."""
    parse = p.parse_known_args

    def parse_known_args(args: list[str] | None = None, namespace: argparse.Namespace | None = None):
        argv = _vllm_spellings(list(sys.argv[1:] if args is None else args), p._option_string_actions)
        parsed, extras = parse(argv, namespace)
        if extras:
            p.error(_unrecognised(extras, p._option_string_actions))
        return parsed, extras

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _vllm_spellings(argv: list[str], known: Iterable[str]) -> list[str]:
    """``--max_model_len`` -> ``--max-model-len``; ``--x-config.a.b 1`` -> ``--x-config '{"a": {"b": 1}}'``."""
    out: list[str] = []
    dotted: dict[str, dict[str, Any]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out += argv[i - 1:]
            break
        if not arg.startswith("--"):
            out.append(arg)
            continue
        key, eq, value = arg.partition("=")
        base, dot, path = key.partition(".")
        base = base.replace("_", "-")
        if dot and base in known:
            if not eq and i < len(argv):
                value, i = argv[i], i + 1
            node = dotted.setdefault(base, {})
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = _json_or_text(value)
            continue
        out.append(f"{base}{dot}{path}{eq}{value}")
    for base, tree in dotted.items():
        out += [base, json.dumps(tree)]
    return out


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _unrecognised(extras: list[str], known: Iterable[str]) -> str:
    options = [o for o in known if o.startswith("--")]
    shown = []
    for arg in extras:
        close = difflib.get_close_matches(arg.partition("=")[0], options, n=1, cutoff=0.6) \
            if arg.startswith("-") else []
        shown.append(f"{arg} (did you mean {close[0]}?)" if close else arg)
    return f"unrecognized arguments: {' '.join(shown)}"


def split_config(loaded: dict[str, Any], settings: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A YAML ``--config``'s keys as (heron settings, vLLM flags by name); unknown keys exit with a did-you-mean."""
    names = set(settings)
    heron: dict[str, Any] = {}
    vllm: dict[str, Any] = {}
    unknown = []
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name in names:
            heron[name] = value
        elif name.replace("_", "-") in VLLM_FLAGS:
            vllm[name.replace("_", "-")] = value
        else:
            unknown.append(str(key))
    if unknown:
        keys = [n.replace("_", "-") for n in names] + list(VLLM_FLAGS)
        shown = []
        for key in unknown:
            close = difflib.get_close_matches(key.replace("_", "-"), keys, n=1, cutoff=0.6)
            shown.append(f"{key} (did you mean {close[0]}?)" if close else key)
        _fail(f"unknown setting(s) in config: {', '.join(shown)}")
    return heron, vllm


def given_options(args: argparse.Namespace, settings: Iterable[str]) -> dict[str, Any]:
    """The table flags set on the command line (by name), leaving out any that is a heron setting."""
    names = set(settings)
    return {f.name: getattr(args, f.dest) for f in VLLM_FLAGS.values()
            if f.dest not in names and hasattr(args, f.dest)}


def apply_vllm_options(options: dict[str, Any]) -> dict[str, Any]:
    """Warn about each no-effect flag, stop on flags for missing features, return aliases as heron settings.

    Raises:
        SystemExit: status 2, after naming every flag whose feature heron does not have yet.
    """
    settings: dict[str, Any] = {}
    problems = []
    for name, value in options.items():
        flag = VLLM_FLAGS[name]
        shown = _shown(flag, value)
        if flag.kind == "alias":
            found = _alias(flag, value)
            settings.update(found)
            if found:
                logger.info("%s: heron's %s", shown, ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in found.items()))
        elif flag.kind == "noop":
            logger.warning("%s has no effect in heron: %s.", shown, flag.why)
        elif _text(value) in flag.allowed:
            logger.info("%s: heron does the same", shown)
        else:
            fix = f"remove it or set it to {flag.allowed[0]}" if flag.allowed[:1] not in ((), ("none",)) \
                else "remove it"
            problems.append(f"{shown}: {flag.why}; {fix}.")
    if problems:
        _fail("\n  ".join(problems))
    return settings


def attention_backend(name: str) -> str:
    """vLLM's ``--attention-backend`` names: heron's own backend if one has the name, else ``auto``."""
    if name == "auto":
        return name
    from heron.plugins import registry

    names = registry("attention_backends").names()
    if name in names or name.lower() not in names and name.upper() not in VLLM_ATTENTION_BACKENDS:
        return name  # heron's name, or unknown: the plugin check names the installed backends
    if name.lower() in names:
        return name.lower()
    logger.warning("--attention-backend %s has no effect in heron: it is one of vLLM's GPU backends; heron "
                   "chooses among its own (auto).", name)
    return "auto"


def _alias(flag: VllmFlag, value: Any) -> dict[str, Any]:
    if flag.name == "task":
        if str(value) not in _TASKS:
            logger.warning("%s has no effect in heron: use --runner and --convert.", _shown(flag, value))
        return dict(_TASKS.get(str(value), {}))
    try:
        if flag.value == "b":
            return {flag.why: value if isinstance(value, bool) else _text(value) in ("1", "true", "yes", "on")}
        if flag.value == "j":
            return {flag.why: value if isinstance(value, dict) else json.loads(value)}
        return {flag.why: human_int(value) if flag.value == "i" else float(value)}
    except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
        _fail(f"{_shown(flag, value)}: {err}")


def _text(value: Any) -> str:
    """A value as comparable text: ``True`` -> ``true``, ``None`` -> ``none``, a dict as JSON."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value).strip().lower()


def _shown(flag: VllmFlag, value: Any) -> str:
    if flag.value == "b":
        on = value if isinstance(value, bool) else _text(value) in ("1", "true", "yes", "on")
        return flag.flag if on else f"--no-{flag.name}"
    text = json.dumps(value) if isinstance(value, dict) else " ".join(map(str, value)) \
        if isinstance(value, list) else str(value)
    return f"{flag.flag} {text}"


def _fail(message: str) -> NoReturn:
    print(f"heron serve: error: {message}", file=sys.stderr)
    raise SystemExit(2)
