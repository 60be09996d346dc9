"""LoRA adapters through a real ``heron serve`` (tiny random Llama, fp32) and the openai SDK.

PEFT adapters made here (random non-zero A and B) are served four ways: ``--lora-modules`` at
start, ``/v1/load_lora_adapter`` at run time (enabled by ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``),
the built-in ``directory`` resolver (``--lora-resolver-dir``) and a resolver plugin installed from
a test distribution (an entry point of ``heron.lora_resolvers`` on PYTHONPATH). With
``--max-loras 2`` the four adapters also take turns in the resident slots. Greedy output through
an adapter must be transformers + peft's, token for token: the generated text is compared, and
the ids by feeding transformers' tokens back as a prompt, where each must rank first in heron's
``prompt_logprobs``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from heron.testing.models import hf_greedy_tokens, save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.conftest import need
from tests.e2e.server_fixture import running_server

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["The LoRA adapter", "0123 abc xyz!"]
TOKENS = 16
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STORE_MODULE = """
    import os

    from heron.interfaces import LoRAResolver
    from heron.lora import LoRARequest


    class StoreResolver(LoRAResolver):
        priority = 5

        async def resolve(self, base_model_name, lora_name):
            folder = os.path.join(os.environ["LORA_TEST_STORE"], lora_name.removeprefix("remote-"))
            if lora_name.startswith("remote-") and os.path.isdir(folder):
                return LoRARequest(lora_name, 0, folder)
            return None
"""


def _adapter(hf_model: Any, path: Path, seed: int) -> Any:
    """Save a PEFT adapter on every projection (r=8, alpha=16, random A and B); return the PEFT model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=PROJ, init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(hf_model), config)
    model.save_pretrained(str(path))
    return model.eval()


def _resolver_dist(site: Path) -> Path:
    info = site / "heron_lora_store_test-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: heron-lora-store-test\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[heron.lora_resolvers]\nteststore = heron_lora_store_test:StoreResolver\n")
    (site / "heron_lora_store_test.py").write_text(textwrap.dedent(STORE_MODULE))
    return site


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    """The base checkpoint, its tokenizer, and the PEFT models of each adapter by serving name."""
    need(importlib.util.find_spec("peft") is not None, "peft (a test dependency) is not installed")
    root = tmp_path_factory.mktemp("lora-e2e")
    base = root / "base"
    hf = tiny_checkpoint(tiny_config("llama"), base)
    tok = save_tiny_tokenizer(base)
    folders = {"sql": root / "startup" / "sql", "second": root / "allowed" / "second",
               "remote-third": root / "store" / "third", "local": root / "resolver" / "local"}
    models = {name: _adapter(hf, folder, seed) for seed, (name, folder) in enumerate(folders.items(), start=1)}
    return {"root": root, "base": base, "hf": hf, "tok": tok, "folders": folders, "models": models}


@pytest.fixture(scope="module")
def server(request, world):
    root = world["root"]
    paths = [str(_resolver_dist(root / "site")), str(REPO), os.environ.get("PYTHONPATH", "")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))  # read by ServerProcess
        patch.setenv("LORA_TEST_STORE", str(root / "store"))
        patch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "true")
        flags = [str(world["base"]), "--dtype", "float32", "--served-model-name", "tiny", "--num-kv-blocks", "64",
                 "--max-num-seqs", "4", "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
                 "--lora-modules", f"sql={world['folders']['sql']}", "--allowed-lora-dirs", str(root / "allowed"),
                 "--lora-resolver-dir", str(root / "resolver")]
        with running_server(request, *flags) as proc:
            yield proc


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _check_greedy(client, world, model: str, reference: Any) -> list[int]:
    """heron's greedy continuation of every prompt through ``model`` is ``reference``'s (returns its ids)."""
    tok, produced = world["tok"], []
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        want = hf_greedy_tokens(reference, ids, TOKENS)
        out = client.completions.create(model=model, prompt=ids, max_tokens=TOKENS, temperature=0,
                                        extra_body={"ignore_eos": True, "skip_special_tokens": False})
        assert out.model == model and out.usage.completion_tokens == TOKENS
        # the text is transformers' tokens decoded (bytes of an unfinished UTF-8 character at the end are held back)
        text = out.choices[0].text
        assert text and tok.decode(want, skip_special_tokens=False).startswith(text), (model, prompt)
        # ids exactly: transformers' tokens fed back as the prompt must each be heron's first choice
        forced = client.completions.create(model=model, prompt=ids + want, max_tokens=1, temperature=0,
                                           extra_body={"prompt_logprobs": 0})
        steps = forced.choices[0].model_extra["prompt_logprobs"][len(ids):]
        ranks = [step[str(t)]["rank"] for step, t in zip(steps, want, strict=True)]
        assert ranks == [1] * TOKENS, (model, prompt, want, ranks)
        produced += want
    return produced


def test_startup_adapter_matches_peft_and_differs_from_base(client, world):
    through_adapter = _check_greedy(client, world, "sql", world["models"]["sql"])
    base = _check_greedy(client, world, "tiny", world["hf"])
    assert through_adapter != base  # the adapter changes the output
    cards = {card.id: card for card in client.models.list().data}
    assert cards["sql"].model_extra["parent"] == "tiny"
    assert cards["sql"].model_extra["root"] == str(world["folders"]["sql"])


def test_load_use_unload_reload_over_http(client, server, world):
    import openai

    folder = str(world["folders"]["second"])
    url = server.base_url
    loaded = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "second", "lora_path": folder})
    assert loaded.status_code == 200 and loaded.text == "Success: LoRA adapter 'second' added successfully."
    _check_greedy(client, world, "second", world["models"]["second"])
    gone = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "second"})
    assert gone.status_code == 200 and gone.text == "Success: LoRA adapter 'second' removed successfully."
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="second", prompt="x", max_tokens=1)
    assert httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "second"}).status_code == 404
    again = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "second", "lora_path": folder})
    assert again.status_code == 200, again.text
    _check_greedy(client, world, "second", world["models"]["second"])
    escape = httpx.post(f"{url}/v1/load_lora_adapter",
                        json={"lora_name": "evil", "lora_path": f"{folder}/../../startup/sql"})
    assert escape.status_code == 400 and escape.json()["error"]["param"] == "lora_path"
    outside = httpx.post(f"{url}/v1/load_lora_adapter",
                         json={"lora_name": "evil", "lora_path": str(world["folders"]["sql"])})
    assert outside.status_code == 400


def test_unknown_adapter_is_404(client):
    import openai

    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="no-such-adapter", prompt="x", max_tokens=1)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="remote-missing", prompt="x", max_tokens=1)  # the plugin is asked, no hit


def test_resolvers_find_adapters_by_name(client, world):
    _check_greedy(client, world, "remote-third", world["models"]["remote-third"])  # the test plugin
    _check_greedy(client, world, "local", world["models"]["local"])  # the built-in directory resolver
    cards = client.models.list().data
    assert cards[0].id == "tiny" and {"sql", "remote-third", "local"} <= {card.id for card in cards}
    roots = {card.id: card.model_extra["root"] for card in cards}
    assert roots["remote-third"] == str(world["folders"]["remote-third"])  # only the plugin knows the store
    assert roots["local"] == str(world["folders"]["local"].resolve())
    _check_greedy(client, world, "sql", world["models"]["sql"])  # evicted from the 2 slots, back again


def test_metrics_report_lora_requests_info(server):
    text = httpx.get(f"{server.base_url}/metrics").text
    line = re.search(r'^heron:lora_requests_info\{(.*)\} (\S+)$', text, re.MULTILINE)
    assert line is not None and 'max_lora="2"' in line.group(1) and float(line.group(2)) > 1.6e9
