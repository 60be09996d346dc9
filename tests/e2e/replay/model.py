"""``HeronReplayForCausalLM``: a model plugin (tests only) that writes a script, token by token.

The checkpoint's ``config.json`` carries ``replay_scripts``: case-token id -> the exact token ids
to produce. At a request's first prefill the model finds the last case token of the prompt,
remembers the prompt length and the script under the request's first KV block id, and from then
on puts all probability mass on ``script[position - prompt_length]`` (then on the first eos
token). Run the server with ``--no-enable-prefix-caching``: shared prompt blocks would make two
requests share a first block.

The hidden state is the one-hot of the chosen next token (exact in any dtype), and the logits are
0 there and -1e9 elsewhere. An :class:`heron.layers.Attention` layer is declared so the engine can
size and bind a KV cache; it is never called (the script needs no attention).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from heron.interfaces import CausalLM, ForwardBatch, ModelContext
from heron.layers import Attention

__all__ = ("HeronReplayForCausalLM",)


class HeronReplayForCausalLM(nn.Module, CausalLM):
    """Replays ``config.replay_scripts``; see the module docstring."""

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        self.vocab_size = int(config.vocab_size)
        self.scripts = {int(k): [int(t) for t in v] for k, v in config.replay_scripts.items()}
        eos = config.eos_token_id
        self.eos = int(eos[0] if isinstance(eos, list) else eos)
        self.attn = Attention(1, 1, int(config.head_dim), float(config.head_dim) ** -0.5, 0, ctx.attention_backend)
        self.dtype = ctx.dtype
        self._plays: dict[int, tuple[int, list[int]]] = {}  # first block id -> (prompt length, script)

    def _script_of(self, prompt: list[int]) -> list[int]:
        for token in reversed(prompt):
            if token in self.scripts:
                return self.scripts[token]
        raise ValueError("The prompt holds no replay case token; put one in the last user message.")

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        ids = input_ids.tolist()
        starts = batch.query_start_loc.tolist()
        targets: list[int] = []
        for i in range(batch.num_reqs):
            chunk = ids[starts[i]:starts[i + 1]]
            seq_len = batch.seq_lens[i]
            first_block = int(batch.block_tables[i, 0])
            if batch.query_lens[i] == seq_len:  # a prefill from position 0: a new request
                self._plays[first_block] = (seq_len, self._script_of(chunk))
            prompt_len, script = self._plays[first_block]
            step = seq_len - prompt_len
            targets += chunk[1:] + [script[step] if step < len(script) else self.eos]
        hidden = torch.zeros(len(targets), self.vocab_size, dtype=self.dtype, device=input_ids.device)
        hidden[torch.arange(len(targets)), torch.tensor(targets)] = 1
        return hidden  # [T, vocab]: one-hot of each row's next token

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[n, vocab] one-hot -> [n, vocab] float32 logits: 0 at the scripted token, -1e9 elsewhere."""
        return (hidden_states.float() - 1.0) * 1e9

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        for _ in weights:  # the checkpoint holds one placeholder tensor; the script is the model
            pass
