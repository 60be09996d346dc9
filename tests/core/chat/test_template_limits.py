"""Chat templates cannot exhaust memory or time: hostile templates fail fast with
TemplateLimitError (a bounded sandbox refuses big operations before computing them), while
real templates render exactly as in jinja2's plain sandbox."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from heron.chat import ChatTemplateError, RenderLimits, TemplateLimitError, render_chat
from heron.loader import ModelNotFoundError, default_model_path, load_checkpoint
from tests.conftest import need
from tests.core.chat.templates import LLAMA3_TOOLS, QWEN_TOOLS

USER = [{"role": "user", "content": "hi"}]

HOSTILE = {
    "repeat": "{{ 'a' * 10**9 }}",
    "repeat twice": "{{ 'a' * 10**5 * 10**5 }}",
    "big range": "{% for i in range(10**6) %}{{ 'x' * 1000 }}{% endfor %}",
    "loop output": "{% for i in range(10**5) %}{{ 'x' * 1000 }}{% endfor %}",
    "nested loops": "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}",
    "loops into a set block": "{% set y %}{% for i in range(10**5) %}{% for j in range(10**5) %}"
    "{{ 'x' * 1000 }}{% endfor %}{% endfor %}{% endset %}",
    "ljust": "{{ 'a'.ljust(10**9) }}",
    "zfill": "{{ 'a'.zfill(10**9) }}",
    "list repeat": "{{ ['a'] * 10**9 }}",
    "tilde repeat": "{{ (('a' ~ 'b') * 100000) * 100000 }}",
    "tilde doubling": "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}"
    "{% endfor %}{{ ns.x }}",
    "plus doubling": "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x + ns.x %}"
    "{% endfor %}{{ ns.x }}",
    "macro doubling": "{% macro m(s, n) %}{% if n %}{{ m(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}"
    "{% endmacro %}{{ m('a', 60) }}",
    "str.format width": "{{ '{:>1000000000}'.format('a') }}",
    "percent width": "{{ '%1000000000s' % 'a' }}",
    "format filter": "{{ '%1000000000s'|format('a') }}",
    "str.join": "{{ ('x' * 1000000).join(['a'] * 100000) }}",
    "join filter": "{{ range(100000)|join('x' * 1000000) }}",
    "str.replace": "{{ ('a' * 100000).replace('a', 'b' * 100000) }}",
    "str.translate": "{{ ('a' * 100000).translate({97: 'b' * 100000}) }}",
    "center filter": "{{ 'a'|center(1000000000) }}",
    "indent filter": "{{ ('a\\n' * 100000)|indent(100000) }}",
    "wordwrap filter": "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 100000) }}",
    "tojson indent": "{{ messages|tojson(indent=1000000000) }}",
    "batch filter": "{{ [1]|batch(1000000000, 0)|list }}",
    "escape chain": "{{ ('<' * 3000000)|e|forceescape|forceescape|forceescape }}",
    "huge power": "{{ 10 ** (10 ** 8) }}",
    "lipsum": "{{ lipsum(10**7) }}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_templates_fail_fast_without_memory(name):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(TemplateLimitError) as err:
            render_chat(HOSTILE[name], USER)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0, f"{name} took {elapsed:.2f} s"
    # the default output limit is 32 Mi characters: a few copies at most, never gigabytes
    assert peak < 160 * 2**20, f"{name} peaked at {peak / 2**20:.0f} MiB"
    message = str(err.value)
    assert any(limit in message for limit in ("max_output_chars", "timeout_s", "limit")), message
    assert message.count(". ") == 0 and message.endswith("."), "one sentence"


@pytest.mark.parametrize("name", ["repeat", "loop output", "tilde doubling", "macro doubling", "str.join"])
def test_memory_follows_the_output_limit(name):
    tracemalloc.start()
    try:
        with pytest.raises(TemplateLimitError, match="max_output_chars = 10,000"):
            render_chat(HOSTILE[name], USER, limits=RenderLimits(max_output_chars=10_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{name} peaked at {peak / 2**10:.0f} KiB with a 10,000-character limit"


def test_timeout_names_the_limit():
    slow = "{% for i in range(10**5) %}{% for j in range(10**5) %}{{ '' }}{% endfor %}{% endfor %}"
    start = time.perf_counter()
    with pytest.raises(TemplateLimitError, match=r"render timeout \(timeout_s = 0.2 s\)"):
        render_chat(slow, USER, limits=RenderLimits(timeout_s=0.2))
    assert time.perf_counter() - start < 1.0


def test_output_limit_is_exact():
    template = "{{ messages[0].content }}"
    text = "y" * 1000
    assert render_chat(template, [{"role": "user", "content": text}], limits=RenderLimits(max_output_chars=1000)) == text
    with pytest.raises(TemplateLimitError, match="max_output_chars = 999"):
        render_chat(template, [{"role": "user", "content": text}], limits=RenderLimits(max_output_chars=999))


def test_limit_errors_are_template_errors_and_limits_are_checked():
    assert issubclass(TemplateLimitError, ChatTemplateError)
    assert RenderLimits().max_output_chars >= 8 * 2**20  # above the largest request body
    for bad in ({"max_output_chars": 0}, {"timeout_s": 0}, {"timeout_s": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RenderLimits(**bad)


BENIGN = {
    "{{ '=' * 10 }}": "==========",
    "{{ 3 * 'ab' }}": "ababab",
    "{{ [1, 2] * 2 }}": "[1, 2, 1, 2]",
    "{{ 'a' + 'b' }}{{ 1 + 2 }}{{ [1] + [2] }}": "ab3[1, 2]",
    "{{ 2 ** 10 }}{{ 10 ** 20 }}": "1024100000000000000000000",
    "{{ 'x'.ljust(4) ~ '|' ~ 'y'.rjust(3) ~ 'z'.center(3) ~ '7'.zfill(3) }}": "x   |  y z 007",
    "{{ '{:>5}|{}'.format('a', 1) }}{{ '{0:{1}}'.format('b', 3) }}": "    a|1b  ",
    "{{ '%5s|%-3d|%.2f' % ('a', 7, 1.5) }}": "    a|7  |1.50",
    "{{ 'a-b'.replace('-', '+') }}{{ ', '.join(['x', 'y']) }}": "a+bx, y",
    "{{ ['p', 'q']|join('/') }}{{ 'k'|center(3) }}|{{ 'l\\nm'|indent(2) }}": "p/q k |l\n  m",
    "{{ 'aa bb'|wordwrap(2) }}|{{ '%s-%s'|format(1, 2) }}|{{ 'x-y'|replace('-', '') }}": "aa\nbb|1-2|xy",
    "{% for i in range(3) %}{{ loop.index }}{% if not loop.last %},{% endif %}{% endfor %}": "1,2,3",
    "{% for x in [] %}a{% else %}empty{% endfor %}": "empty",
    "{% set ns = namespace(s='') %}{% for c in 'abc' %}{% set ns.s = ns.s ~ c %}{% endfor %}{{ ns.s }}": "abc",
    "{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m('a') }}{% set b %}[{{ 1 }}]{% endset %}{{ b }}": "<a>[1]",
    "{{ [1, 2, 3]|batch(2, 0)|list }}{{ [[1], [2]]|sum(start=[]) }}": "[[1, 2], [3, 0]][1, 2]",
    "{{ {'a': [1]}|tojson(indent=2) }}": '{\n  "a": [\n    1\n  ]\n}',
    "{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}": "01",
    "{{ '<a & b>'|e }}|{{ '\"x\"'|forceescape }}": "&lt;a &amp; b&gt;|&#34;x&#34;",
}


@pytest.mark.parametrize("template", list(BENIGN))
def test_ordinary_operations_still_work(template):
    assert render_chat(template, USER) == BENIGN[template]


def _reference(template: str, messages, **variables) -> str:
    """What rendering gave before the limits: jinja2's plain immutable sandbox, same options."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    return env.from_string(template).render(messages=messages, **variables)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                         "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}]
CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": "", "tool_calls": [
         {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 20}'}],
    [{"role": "user", "content": "long " * 400_000}],
]


@pytest.fixture(scope="module")
def smollm2_template() -> str:
    try:
        default_model_path()
    except ModelNotFoundError as e:
        need(False, str(e))
    template = load_checkpoint(None).tokenizer.chat_template
    need(bool(template), "the default model has no chat template")
    return template


@pytest.mark.parametrize("which", ["smollm2", "llama3_tools", "qwen_tools"])
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("tools", [None, TOOLS], ids=["no_tools", "tools"])
def test_real_templates_render_as_before(request, which, conv, tools):
    template = {"llama3_tools": LLAMA3_TOOLS, "qwen_tools": QWEN_TOOLS}.get(which)
    if template is None:
        template = request.getfixturevalue("smollm2_template")
    messages = CONVERSATIONS[conv]
    variables = {"tools": tools, "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>"}
    expected = _reference(template, messages, **variables)
    assert render_chat(template, messages, **variables) == expected
