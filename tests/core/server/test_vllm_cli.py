"""``vllm serve`` command lines given to ``heron serve``: flags, spellings, YAML keys and VLLM_API_KEY."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from heron.cli import build_parser
from heron.server.settings import settings_from_args
from heron.server.vllm_flags import VLLM_FLAGS

#: a deployment's command line as vLLM's docs and recipes write it (the model comes first)
REALISTIC = ("serve /models/my-model --host 0.0.0.0 --port 8001 --served-model-name my-model "
             "--gpu-memory-utilization 0.9 --max-model-len 4k --dtype half --enforce-eager --max-num-seqs 8 "
             "--trust-remote-code --disable-log-requests --tensor-parallel-size 1 --swap-space 4 "
             "--enable-prefix-caching --seed 0 --uvicorn-log-level warning --kv-cache-dtype auto --block-size 16 "
             "--max-num-batched-tokens 8K --disable-log-stats --tokenizer-mode auto --distributed-executor-backend mp "
             "--enable-chunked-prefill --max_logprobs 5 --compilation-config.level 3 -O3").split()
#: the vLLM-only flags above that change nothing here, each worth exactly one warning line
NO_EFFECT = ("--gpu-memory-utilization", "--enforce-eager", "--disable-log-requests", "--swap-space",
             "--kv-cache-dtype", "--block-size", "--disable-log-stats", "--tokenizer-mode",
             "--enable-chunked-prefill", "--compilation-config",
             "--optimization-level")
SAMPLE = {"b": [], "i": ["3"], "f": ["0.5"], "s": ["x"], "j": ['{"a": 1}'], "l": ["a", "b"], "o": []}


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def settings(parser, argv: list[str], environ: dict[str, str] | None = None):
    return settings_from_args(parser.parse_args(["serve", *argv] if argv[:1] != ["serve"] else argv), environ or {})


def exits(parser, capsys, argv: list[str], environ: dict[str, str] | None = None) -> str:
    """Run ``argv`` expecting exit status 2; return what was printed to stderr."""
    with pytest.raises(SystemExit) as info:
        settings(parser, argv, environ)
    assert info.value.code == 2
    return capsys.readouterr().err


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_realistic_command_line_starts_with_one_warning_per_no_op_flag(parser, caplog):
    caplog.set_level(logging.INFO, logger="heron.serve")
    s = settings(parser, REALISTIC, {"VLLM_API_KEY": "sk-vllm"})
    assert (s.model, s.host, s.port, s.served_model_name) == ("/models/my-model", "0.0.0.0", 8001, ["my-model"])
    assert (s.dtype, s.max_model_len, s.max_num_seqs, s.max_num_batched_tokens) == ("float16", 4000, 8, 8192)
    assert s.trust_remote_code and s.enable_prefix_caching and s.seed == 0 and s.max_logprobs == 5
    assert s.uvicorn_log_level == "warning" and s.api_key == ["sk-vllm"]
    lines = warnings(caplog)
    assert len(lines) == len(NO_EFFECT)
    for flag in NO_EFFECT:
        [line] = [w for w in lines if w.startswith(flag)]
        assert "has no effect in heron: " in line and len(line.splitlines()) == 1
    assert any("GPU memory" in w for w in lines if w.startswith("--gpu-memory-utilization 0.9"))
    assert '--compilation-config {"level": 3}' in " ".join(lines)
    assert s.tensor_parallel_size == 1


@pytest.mark.parametrize("argv, named", [
    (["-pp", "2"], "--pipeline-parallel-size 2"),
    (["--pipeline-parallel-size=4"], "--pipeline-parallel-size 4"),
    (["-dcp", "2"], "--decode-context-parallel-size 2"),
    (["--num-speculative-tokens", "5"], "speculative decoding"),
    (["--data-parallel-size-local", "2"], "--data-parallel-size-local 2"),
])
def test_features_heron_lacks_are_a_clear_error(parser, capsys, argv, named):
    err = exits(parser, capsys, argv)
    assert err.startswith("heron serve: error: ") and named in err and "not available yet" in err
    assert "remove it" in err


def test_every_missing_feature_is_named_at_once_and_defaults_pass(parser, capsys, caplog):
    err = exits(parser, capsys, ["-pp", "2", "-dcp", "4", "--num-speculative-tokens", "3"])
    assert "--pipeline-parallel-size 2" in err and "--decode-context-parallel-size 4" in err
    assert "--num-speculative-tokens" in err
    assert "set it to 1" in err
    caplog.set_level(logging.INFO, logger="heron.serve")
    settings(parser, ["-tp", "1", "-pp", "1", "-dp", "1", "--no-headless", "--device", "cpu", "--nnodes", "1"])
    assert not warnings(caplog)


def test_parallelism_flags_are_heron_settings(parser, caplog):
    caplog.set_level(logging.INFO, logger="heron.serve")
    s = settings(parser, ["-tp", "2", "-dp", "2", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
                          "--master-port", "29600", "--headless", "--device", "auto",
                          "--distributed-executor-backend", "mp"])
    assert (s.tensor_parallel_size, s.data_parallel_size, s.nnodes, s.node_rank) == (2, 2, 2, 1)
    assert (s.master_addr, s.master_port, s.headless, s.device) == ("10.0.0.1", 29600, True, "auto")
    assert not warnings(caplog)


@pytest.mark.parametrize("name", sorted(VLLM_FLAGS))
def test_every_vllm_flag_is_accepted_warned_about_or_refused(parser, capsys, caplog, name):
    flag = VLLM_FLAGS[name]
    caplog.set_level(logging.INFO, logger="heron.serve")
    argv = [flag.flag, *SAMPLE[flag.value]] if name != "task" else ["--task", "generate"]
    if flag.kind == "later":
        assert f"{flag.flag}" in exits(parser, capsys, argv)
        return
    settings(parser, argv)
    lines = warnings(caplog)
    if flag.kind == "noop":
        assert len(lines) == 1 and lines[0].startswith(flag.flag) and f"has no effect in heron: {flag.why}." in lines[0]
    else:
        assert not lines


def test_unknown_flags_fail_with_a_did_you_mean(parser, capsys):
    for argv, hint in ((["--gpu-memory-utilisation", "0.9"], "--gpu-memory-utilization"),
                       (["--max-modle-len=2048"], "--max-model-len"),
                       (["--tensor-paralel-size", "2"], "--tensor-parallel-size"),
                       (["--enable-prefix-cache"], "--enable-prefix-caching")):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["serve", *argv])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "unrecognized arguments" in err and f"(did you mean {hint}?)" in err
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--frobnicate-everything"])
    assert "unrecognized arguments: --frobnicate-everything" in capsys.readouterr().err


@pytest.mark.parametrize("given, heron", [("half", "float16"), ("float16", "float16"), ("bfloat16", "bfloat16"),
                                          ("float", "float32"), ("float32", "float32"), ("auto", "auto"),
                                          ("HALF", "float16")])
def test_dtype_takes_vllms_names(parser, given, heron):
    assert settings(parser, ["--dtype", given]).dtype == heron
    assert settings(parser, [], {"HERON_DTYPE": given}).dtype == heron


def test_an_unknown_dtype_lists_vllms_choices(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--dtype", "fp8"])
    assert "half, float16, bfloat16, float, float32" in capsys.readouterr().err


def test_vllm_spellings(parser):
    s = settings(parser, ["--model", "/m", "--max_model_len", "32K", "--no-trust-remote-code", "--max-num-seqs=3"])
    assert (s.model, s.max_model_len, s.trust_remote_code, s.max_num_seqs) == ("/m", 32768, False, 3)
    assert settings(parser, ["--max-model-len", "auto"]).max_model_len is None
    assert settings(parser, ["--max-model-len", "-1"]).max_model_len is None
    assert settings(parser, ["--max-model-len", "1.5k"]).max_model_len == 1500


def test_aliases_become_heron_settings(parser, caplog):
    caplog.set_level(logging.INFO, logger="heron.serve")
    s = settings(parser, ["--num-gpu-blocks-override", "128", "--disable-fastapi-docs", "--enable-log-requests",
                          "--shutdown-timeout", "5", "--task", "embed",
                          "--override-pooler-config", '{"pooling_type": "MEAN"}'])
    assert (s.num_kv_blocks, s.disable_docs, s.log_requests, s.drain_timeout) == (128, True, True, 5.0)
    assert (s.runner, s.convert, s.pooler_config) == ("pooling", "embed", {"pooling_type": "MEAN"})
    assert not warnings(caplog)
    assert any("heron's --num-kv-blocks 128" in r.getMessage() for r in caplog.records)


def test_vllm_attention_backend_names(parser, caplog):
    assert settings(parser, ["--attention-backend", "TORCH_SDPA"]).attention_backend == "torch_sdpa"
    assert settings(parser, ["--attention-backend", "torch_sdpa"]).attention_backend == "torch_sdpa"
    assert settings(parser, ["--attention-backend", "FLASH_ATTN"]).attention_backend == "auto"
    assert any("--attention-backend FLASH_ATTN has no effect in heron" in w for w in warnings(caplog))
    assert settings(parser, ["--attention-backend", "nonesuch"]).attention_backend == "nonesuch"  # plugin check names it


def test_vllm_api_key(parser):
    assert settings(parser, [], {"VLLM_API_KEY": "a,b"}).api_key == ["a,b"]  # one key, as vLLM reads it
    assert settings(parser, ["--api-key", "flag"], {"VLLM_API_KEY": "env"}).api_key == ["flag"]
    assert settings(parser, [], {"VLLM_API_KEY": "v", "HERON_API_KEY": "h1,h2"}).api_key == ["h1", "h2"]
    assert settings(parser, [], {"VLLM_API_KEY": ""}).api_key == []
    assert settings(parser, [], {}).api_key == []


def test_yaml_config_with_vllms_keys(parser, tmp_path: Path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="heron.serve")
    config = tmp_path / "vllm.yaml"
    config.write_text("model: /models/m\nport: 8123\nserved-model-name: my-model\ndtype: half\nmax_model_len: 2k\n"
                      "gpu-memory-utilization: 0.85\nenforce_eager: true\ntensor-parallel-size: 1\n"
                      "enable-prefix-caching: false\nspeculative-config: null\napi-key: from-yaml\n"
                      "compilation-config:\n  level: 3\nnum-gpu-blocks-override: 64\n")
    s = settings(parser, ["--config", str(config), "--port", "9000"])
    assert (s.model, s.port, s.served_model_name, s.dtype, s.max_model_len) == ("/models/m", 9000, ["my-model"],
                                                                                 "float16", 2000)
    assert not s.enable_prefix_caching and s.api_key == ["from-yaml"] and s.num_kv_blocks == 64
    lines = warnings(caplog)
    assert [w.split()[0] for w in sorted(lines)] == ["--compilation-config", "--enforce-eager",
                                                     "--gpu-memory-utilization"]
    assert settings(parser, ["--config", str(config)], {"VLLM_API_KEY": "env"}).api_key == ["env"]

    config.write_text("pipeline-parallel-size: 2\n")
    assert "--pipeline-parallel-size 2" in exits(parser, capsys, ["--config", str(config)])
    config.write_text("tensor-parallel-size: 2\ndata-parallel-size: 2\n")
    s = settings(parser, ["--config", str(config)])
    assert (s.tensor_parallel_size, s.data_parallel_size) == (2, 2)
    config.write_text("max-modle-len: 2048\ngpu_memory_utilisation: 0.9\nport: 1\n")
    err = exits(parser, capsys, ["--config", str(config)])
    assert "max-modle-len (did you mean max-model-len?)" in err
    assert "gpu_memory_utilisation (did you mean gpu-memory-utilization?)" in err
