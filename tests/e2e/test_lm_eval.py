"""lm-evaluation-harness against a real ``heron serve``, offline, on two tasks the test writes itself.

A multiple-choice task (log-likelihoods: lm-eval's ``local-completions`` sends ``echo`` +
``logprobs`` and reads the prompt's token logprobs back) and a ``generate_until`` task run through
``lm_eval.simple_evaluate`` exactly as a user would run them against vLLM: token-id prompts in
batches, string prompts over concurrent connections, and ``local-chat-completions`` with the chat
template. Every served number is checked against heron's offline engine on the same weights (fp32):
the log-likelihood of every choice within 1e-3, every generation token for token, and the metrics
lm-eval reports equal the ones those offline answers give.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from heron.engine.sampling_params import SamplingParams
from tests.conftest import need
from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
KEY = "sk-heron-lm-eval"
MAX_GEN = 8
UNTIL = ["\n\n"]
LL_ATOL = 1e-3
MC_DOCS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "London", "Berlin"], "answer": 0},
    {"question": "How many legs does a spider have?", "choices": ["six", "eight", "ten"], "answer": 1},
    {"question": "Which planet is closest to the Sun?", "choices": ["Venus", "Mars", "Mercury"], "answer": 2},
    {"question": "What colour is the sky on a clear day?", "choices": ["green", "blue", "red"], "answer": 1},
]
GEN_PROMPTS = ["The capital of France is", "One, two, three,", "Water boils at", "My favourite fruit is"]
NO_MATCH = "(an answer no model gives)"


# -- the served model, the offline reference, lm-eval's task folder -------------------------------


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    with running_server(request, "--dtype", "float32", "--api-key", KEY, "--enable-tokenizer-info-endpoint") as proc:
        yield proc


@pytest.fixture(scope="module")
def offline_hf(tmp_path_factory):
    """lm-eval and datasets never reach the network: the hub is offline, caches are the test's own."""
    need(_has_lm_eval(), "lm-eval[api] (the test extra) is not installed")
    import datasets.config
    import huggingface_hub.constants

    cache = tmp_path_factory.mktemp("hf-cache")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.setenv(name, "1")
        mp.setenv("HF_DATASETS_CACHE", str(cache))
        mp.setenv("OPENAI_API_KEY", KEY)  # lm-eval's local-* models send it as the bearer token
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", cache)  # read at import: the env var may be late
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield cache


@pytest.fixture(scope="module")
def tokenizer_dir(llm32, tmp_path_factory) -> Path:
    """The served model's tokenizer as an HF folder: what ``tokenizer=`` points lm-eval at."""
    path = tmp_path_factory.mktemp("tokenizer")
    llm32.get_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gen_greedy(llm32) -> list[str]:
    """heron's offline greedy continuations of GEN_PROMPTS, with the stops lm-eval sends."""
    tok = llm32.get_tokenizer()
    params = SamplingParams(temperature=0, max_tokens=MAX_GEN, stop=[*UNTIL, tok.eos_token])
    outs = llm32.generate([{"prompt_token_ids": _encode(tok, p)} for p in GEN_PROMPTS], params, use_tqdm=False)
    texts = [o.outputs[0].text for o in outs]
    assert all(texts), texts
    return texts


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, offline_hf, gen_greedy) -> Path:
    """Two lm-eval tasks on local JSONL data: ``heron_mc`` (log-likelihood) and ``heron_gen``.

    Half of the generation targets are heron's own offline greedy text, so a served run that
    matches it scores exactly 0.5 exact_match.
    """
    import yaml

    root = tmp_path_factory.mktemp("lm-eval-tasks")
    gen_docs = [{"prompt": p, "target": gen_greedy[i] if i % 2 == 0 else NO_MATCH} for i, p in enumerate(GEN_PROMPTS)]
    for name, docs in (("mc", MC_DOCS), ("gen", gen_docs)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = {"dataset_path": "json", "test_split": "test", "doc_to_target": "answer"}
    mc = {**common, "task": "heron_mc", "output_type": "multiple_choice",
          "dataset_kwargs": {"data_files": {"test": str(root / "mc.jsonl")}},
          "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}",
          "metric_list": [{"metric": "acc"}]}
    gen = {**common, "task": "heron_gen", "output_type": "generate_until",
           "dataset_kwargs": {"data_files": {"test": str(root / "gen.jsonl")}},
           "doc_to_text": "prompt", "doc_to_target": "target",
           "generation_kwargs": {"until": UNTIL, "max_gen_toks": MAX_GEN, "do_sample": False},
           "metric_list": [{"metric": "exact_match"}]}
    for cfg in (mc, gen):
        (root / f"{cfg['task']}.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _has_lm_eval() -> bool:
    """lm-eval with its ``api`` extra (the local-* models need aiohttp and tenacity)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("lm_eval", "aiohttp", "tenacity"))


def _encode(tok: Any, text: str) -> list[int]:
    """What lm-eval's huggingface tokenizer backend sends: no special tokens added."""
    return tok(text, add_special_tokens=False).input_ids


def _evaluate(task_dir: Path, model: str, model_args: dict[str, Any], tasks: list[str], **kwargs: Any) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(model=model, model_args=model_args, tasks=tasks, log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(task_dir), include_defaults=False), **kwargs)
    assert out is not None
    for task in tasks:
        assert len(out["samples"][task]) == (len(MC_DOCS) if task == "heron_mc" else len(GEN_PROMPTS)), task
    return out


def _samples(out: dict, task: str) -> list[dict]:
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


# -- the offline answers -----------------------------------------------------------------------


def _offline_loglikelihoods(llm, context: str, continuations: list[str]) -> list[tuple[float, bool]]:
    """(sum of the continuation's token logprobs, is it the greedy continuation) from heron's engine."""
    tok = llm.get_tokenizer()
    ctx = _encode(tok, context)
    prompts = [_encode(tok, context + c) for c in continuations]  # lm-eval encodes the whole, then splits
    params = SamplingParams(temperature=0, max_tokens=0, prompt_logprobs=1)
    out = []
    for ids, res in zip(prompts, llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False),
                        strict=True):
        assert ids[: len(ctx)] == ctx
        steps = res.prompt_logprobs
        picked = [steps[i][ids[i]] for i in range(len(ctx), len(ids))]
        out.append((sum(lp.logprob for lp in picked), all(lp.rank == 1 for lp in picked)))
    return out


def _check_mc(out: dict, llm) -> None:
    """Every choice's served log-likelihood equals the offline one; so does the accuracy."""
    hits = []
    for sample, doc in zip(_samples(out, "heron_mc"), MC_DOCS, strict=True):
        context = f"Question: {doc['question']}\nAnswer:"
        served = [r[0] for r in sample["resps"]]  # one [(loglikelihood, is_greedy)] per choice
        expected = _offline_loglikelihoods(llm, context, [" " + c for c in doc["choices"]])
        for (ll, greedy), (want_ll, want_greedy) in zip(served, expected, strict=True):
            assert ll == pytest.approx(want_ll, abs=LL_ATOL), (doc, served, expected)
            assert greedy == want_greedy, (doc, served, expected)
        lls = [ll for ll, _ in expected]
        hits.append(float(lls.index(max(lls)) == doc["answer"]))
    acc = out["results"]["heron_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    assert acc == pytest.approx(sum(hits) / len(hits)), hits


def _check_gen(out: dict, want: list[str]) -> None:
    """The served generations are heron's offline greedy texts; exact_match scores them."""
    samples = _samples(out, "heron_gen")
    got = [s["resps"][0][0] for s in samples]
    assert got == want
    targets = [s["target"] for s in samples]
    expected = sum(g == t for g, t in zip(got, targets, strict=True)) / len(got)
    assert out["results"]["heron_gen"]["exact_match,none"] == pytest.approx(expected)


# -- the runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["token-ids-batched", "strings-concurrent-remote-tokenizer"])
def test_local_completions(server, task_dir, tokenizer_dir, llm32, gen_greedy, variant):
    """``local-completions``: log-likelihoods and generations, as token-id batches with a local
    tokenizer, or as concurrent string requests with lm-eval's default: the server's tokenizer
    (found through ``/tokenizer_info`` and used through ``/tokenize`` and ``/detokenize``)."""
    from lm_eval.utils import check_remote_tokenizer_support

    url = f"{server.base_url}/v1/completions"
    args: dict[str, Any] = {"model": MODEL, "base_url": url, "max_length": 512, "max_gen_toks": MAX_GEN,
                            "timeout": 120}
    if variant == "token-ids-batched":
        args |= {"tokenizer_backend": "huggingface", "tokenizer": str(tokenizer_dir), "tokenized_requests": True,
                 "batch_size": 2, "num_concurrent": 1}
    else:
        assert check_remote_tokenizer_support(url, auth_token=KEY, max_retries=1)
        args |= {"auth_token": KEY, "tokenized_requests": False, "batch_size": 1, "num_concurrent": 2}
    out = _evaluate(task_dir, "local-completions", args, ["heron_mc", "heron_gen"])
    _check_mc(out, llm32)
    _check_gen(out, gen_greedy)
    assert out["results"]["heron_gen"]["exact_match,none"] == pytest.approx(0.5)


def test_local_chat_completions(server, task_dir, llm32):
    """``local-chat-completions`` with the chat template: heron's greedy chat answers, scored."""
    args = {"model": MODEL, "base_url": f"{server.base_url}/v1/chat/completions", "max_gen_toks": MAX_GEN,
            "timeout": 120}
    out = _evaluate(task_dir, "local-chat-completions", args, ["heron_gen"], apply_chat_template=True)
    params = SamplingParams(temperature=0, max_tokens=MAX_GEN, stop=UNTIL)
    want = []
    for sample, prompt in zip(_samples(out, "heron_gen"), GEN_PROMPTS, strict=True):
        sent = sample["arguments"][0][0]  # the chat lm-eval sent: a JsonChatStr, a one-string tuple
        messages = json.loads(sent if isinstance(sent, str) else sent[0])
        assert messages[-1] == {"role": "user", "content": prompt}, messages
        want.append(llm32.chat(messages, params, use_tqdm=False)[0].outputs[0].text)
    assert all(want), want
    _check_gen(out, want)


def test_max_tokens_zero_scoring(server, llm32):
    """The older request shape (``max_tokens: 0``, no generated token) scores the whole prompt."""
    doc = MC_DOCS[0]
    context, continuation = f"Question: {doc['question']}\nAnswer:", " " + doc["choices"][0]
    tok = llm32.get_tokenizer()
    ids, ctxlen = _encode(tok, context + continuation), len(_encode(tok, context))
    body = {"model": MODEL, "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0}
    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == context + continuation
    assert len(lp["token_logprobs"]) == len(lp["tokens"]) == len(ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    (want, _), = _offline_loglikelihoods(llm32, context, [continuation])
    assert sum(lp["token_logprobs"][ctxlen:]) == pytest.approx(want, abs=LL_ATOL)
