"""The paged KV-cache pool: block allocation, ref counts and hash-chained prefix caching.

A full block is identified by a SHA-256 digest over its parent block's digest, its token ids, the
request's ``cache_salt`` and ``cache_key_extra`` (anything else that changes the KV, e.g. a LoRA
adapter), so two requests share a block only when everything before it is identical too, and a
tenant cannot craft a collision on purpose (Python's ``hash()`` of a token tuple is not
collision resistant). Each field is length-prefixed, so no two different inputs encode alike. Freed blocks that hold a cached
prefix stay findable until the pool needs them again: the free queue is LRU (freed blocks go to
the back, allocation takes from the front), and a reused block forgets its old hash.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict

from heron.engine.request import Sequence

__all__ = ("BlockManager", "block_key")

_ROOT = bytes(32)  # the "parent" of a sequence's first block


def _field(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    raw = value.encode("utf-8", "surrogatepass")
    return b"\x01" + len(raw).to_bytes(8, "little") + raw


def block_key(parent: bytes | None, tokens: list[int], salt: str | None = None, extra: str | None = None) -> bytes:
    """The prefix-cache key of a full block: SHA-256 over (parent key, token ids, salt, extra)."""
    ids = array("q", tokens).tobytes()
    h = hashlib.sha256(parent or _ROOT)
    h.update(len(tokens).to_bytes(8, "little"))
    h.update(ids)
    h.update(_field(salt))
    h.update(_field(extra))
    return h.digest()


class BlockManager:
    """Hands out fixed-size KV blocks to sequences and finds cached prefixes for new ones."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError(f"The KV cache needs at least one block, got {num_blocks}.")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[bytes | None] = [None] * num_blocks
        self.cached: dict[bytes, int] = {}  # block key (SHA-256 digest) -> block id
        # free blocks in eviction order (front first); values unused
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.prefix_queries = 0  # tokens looked up
        self.prefix_hits = 0  # tokens found

    # -- accounting -------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def usage(self) -> float:
        """Fraction of blocks held by live sequences (cached-but-free blocks count as free)."""
        return 1.0 - len(self.free) / self.num_blocks

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = seq.num_computed_tokens + num_new_tokens
        return max(0, -(-total // self.block_size) - len(seq.block_table))

    # -- hashing ----------------------------------------------------------------------------


    def _take(self) -> int:
        block, _ = self.free.popitem(last=False)
        old = self.block_hash[block]
        if old is not None:
            if self.cached.get(old) == block:
                del self.cached[old]
            self.block_hash[block] = None
        self.ref_counts[block] = 1
        return block

    # -- the scheduler's calls --------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> int:
        """On first scheduling: reuse cached full blocks of the sequence's tokens.

        At least one token is always left to compute (its logits are needed). Returns the number
        of tokens found; they are counted as computed.
        """
        if not self.enable_prefix_caching or seq.block_table or seq.params.prompt_logprobs is not None:
            return 0  # prompt_logprobs need every prompt position computed
        bs = self.block_size
        tokens = seq.token_ids
        max_blocks = (len(tokens) - 1) // bs
        salt, extra = seq.request.cache_salt, seq.request.cache_key_extra
        hashes: list[bytes] = []
        blocks: list[int] = []
        for i in range(max_blocks):
            h = block_key(hashes[-1] if hashes else None, tokens[i * bs:(i + 1) * bs], salt, extra)
            block = self.cached.get(h)
            if block is None:
                break
            hashes.append(h)
            blocks.append(block)
        self.prefix_queries += len(tokens)
        for block in blocks:
            if self.ref_counts[block] == 0:
                del self.free[block]
            self.ref_counts[block] += 1
        seq.block_table = blocks
        seq.block_hashes = hashes
        seq.num_hashed_blocks = len(blocks)
        found = len(blocks) * bs
        self.prefix_hits += found
        seq.num_computed_tokens = found
        return found

    def fork(self, parent: Sequence, child: Sequence) -> int:
        """Share ``parent``'s full prompt blocks with ``child`` (an n > 1 sibling with the same prompt).

        At least one prompt token is left for the child to compute. Returns the tokens shared.
        """
        bs = self.block_size
        shared = min((child.num_prompt_tokens - 1) // bs, parent.num_computed_tokens // bs, len(parent.block_table))
        child.block_table = list(parent.block_table[:shared])
        for block in child.block_table:
            self.ref_counts[block] += 1
        child.block_hashes = list(parent.block_hashes[:shared])
        child.num_hashed_blocks = len(child.block_hashes)
        child.num_computed_tokens = shared * bs
        return shared * bs

    def allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for ``num_new_tokens`` more tokens of ``seq``; False (nothing taken) if full."""
        need = self.blocks_needed(seq, num_new_tokens)
        if need > len(self.free):
            return False
        for _ in range(need):
            seq.block_table.append(self._take())
        return True

    def commit(self, seq: Sequence) -> None:
        """After a step computed K/V of ``seq``: register its newly full blocks in the cache."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        salt, extra = seq.request.cache_salt, seq.request.cache_key_extra
        tokens = seq.token_ids
        for i in range(seq.num_hashed_blocks, full):
            parent = seq.block_hashes[i - 1] if i else None
            h = block_key(parent, tokens[i * bs:(i + 1) * bs], salt, extra)
            seq.block_hashes.append(h)
            block = seq.block_table[i]
            if h not in self.cached and self.block_hash[block] is None:
                self.cached[h] = block
                self.block_hash[block] = h
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)

    def free_seq(self, seq: Sequence) -> None:
        """Release every block of ``seq`` (last blocks first, so prefixes are evicted last)."""
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                if self.block_hash[block] is None:
                    self.free[block] = None
                    self.free.move_to_end(block, last=False)  # uncached: reuse first
                else:
                    self.free[block] = None  # cached: evict least recently used first
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks = 0
        seq.block_hashes = []

    def reset_prefix_cache(self) -> None:
        for h, block in list(self.cached.items()):
            self.block_hash[block] = None
            del self.cached[h]

    def check_no_leaks(self) -> None:
        """Raise if any block is still referenced (call when no sequence is alive)."""
        held = [b for b, r in enumerate(self.ref_counts) if r]
        if held or len(self.free) != self.num_blocks:
            raise AssertionError(f"KV blocks leaked: {len(held)} referenced, {len(self.free)}/{self.num_blocks} free")
