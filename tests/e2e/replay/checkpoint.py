"""Write a replay checkpoint for one :class:`Family`: tokenizer, chat template, config and scripts.

The tokenizer is a byte-level BPE trained on the family's own texts, plus added tokens the way
the real family has them: the markers in ``family.special`` (and the template's and eos tokens,
and :data:`STRAY`) are special, ``family.added`` are ordinary added tokens, and each case gets a
plain added token ``<case_N>`` that the test writes into the user message to pick the script.
Each case's script is the exact tokenization of its text followed by the first eos token.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.replay.formats import STRAY, Family

__all__ = ("ARCHITECTURE", "ReplayCheckpoint", "write_checkpoint")

ARCHITECTURE = "HeronReplayForCausalLM"
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>")
_TEMPLATE = ("{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
             "{%- if add_generation_prompt %}{{ GEN }}{% endif %}")


class ReplayCheckpoint:
    """A written checkpoint: its folder, the case tokens to put in prompts, and the tokenizer."""

    def __init__(self, folder: Path, case_tokens: dict[str, str], tokenizer) -> None:
        self.folder = folder
        self.case_tokens = case_tokens  # case name -> "<case_N>"
        self.tokenizer = tokenizer


def _train(family: Family, corpus: list[str]):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    raw.train_from_iterator(corpus, trainer)
    special = dict.fromkeys([*TEMPLATE_TOKENS, *family.eos, *family.special, STRAY])
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    cases = [f"<case_{i}>" for i in range(len(family.cases))]
    raw.add_tokens([AddedToken(t, special=False, normalized=False) for t in [*family.added, *cases]])
    return raw, dict(zip([c.name for c in family.cases], cases, strict=True))


def write_checkpoint(folder: Path, family: Family) -> ReplayCheckpoint:
    """Write the checkpoint of ``family`` into ``folder`` (created) and return it."""
    import torch
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    corpus = [c.text for c in family.cases] + ["user assistant Please answer the case now."]
    raw, case_tokens = _train(family, corpus)
    template = _TEMPLATE.replace("{{ GEN }}", family.generation_prompt)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=family.eos[0], chat_template=template)
    tok.save_pretrained(str(folder))
    eos_ids = [tok.convert_tokens_to_ids(t) for t in family.eos]
    scripts: dict[str, list[int]] = {}
    for case in family.cases:
        ids = tok.encode(case.text, add_special_tokens=False)
        if tok.decode(ids, skip_special_tokens=False) != case.text:
            raise AssertionError(f"{family.name}/{case.name}: the replay tokenizer does not round-trip the script")
        if not ids or ids[-1] not in eos_ids:
            ids.append(eos_ids[0])
        scripts[str(tok.convert_tokens_to_ids(case_tokens[case.name]))] = ids
    config = {
        "architectures": [ARCHITECTURE], "model_type": "llama", "vocab_size": len(tok),
        "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
        "num_key_value_heads": 1, "head_dim": 8, "max_position_embeddings": 2048, "tie_word_embeddings": False,
        "eos_token_id": eos_ids, "bos_token_id": None, "torch_dtype": "float32", "replay_scripts": scripts,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    save_file({"replay.placeholder": torch.zeros(1)}, str(folder / "model.safetensors"))
    return ReplayCheckpoint(folder, case_tokens, tok)
