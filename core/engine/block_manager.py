"""The paged KV-cache pool: block allocation, ref counts and hash-chained prefix caching.

A full block is identified by a SHA-256 digest over its parent block's digest, its token ids, the
request's ``cache_salt`` and ``cache_key_extra`` (anything else that changes the KV, e.g. a LoRA
adapter), so two requests share a block only when everything before it is identical too, and a
tenant cannot craft a collision on purpose (Python's ``hash()`` of a token tuple is not
collision resistant). Each field is length-prefixed, so no two different inputs encode alike. Freed blocks that hold a cached
prefix stay findable until the pool needs them again: the free queue is LRU (freed blocks go to
the back, allocation takes from the front), and a reused block forgets its old hash.

Window mode (``sliding_window=W``: every attention layer sees at most the last ``W`` positions):
once a sequence's next token is at position ``p``, a block whose last position is ``<= p - W`` is
out of every later query's window, so it is dropped while the sequence runs (a full block stays
findable in the cache as usual) and its block-table entry points at the null block: block 0,
reserved, never handed out nor written, so it stays zero and a backend that reads the whole
table and masks out-of-window positions reads finite zeros. A prefix hit of ``L`` tokens then
needs only the cached blocks that the query at ``L`` can see; those before are the null block.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

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

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True,
                 sliding_window: int | None = None) -> None:
        if sliding_window is not None and sliding_window < 1:
            raise ValueError(f"sliding_window must be a positive number of tokens, got {sliding_window}.")
        #: window mode reserves the null block: block 0 (padding in the runner's tables too)
        self.null_block: int | None = 0 if sliding_window else None
        reserved = 1 if sliding_window else 0
        if num_blocks < 1 + reserved:
            raise ValueError(f"The KV cache needs at least {1 + reserved} blocks, got {num_blocks}.")
        self.num_blocks = num_blocks
        #: blocks that sequences can hold (all but the null block)
        self.num_usable_blocks = num_blocks - reserved
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.sliding_window = sliding_window
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[bytes | None] = [None] * num_blocks
        self.cached: dict[bytes, int] = {}  # block key (SHA-256 digest) -> block id
        # free blocks in eviction order (front first); values unused
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(reserved, num_blocks))
        self.prefix_queries = 0  # tokens looked up
        self.prefix_hits = 0  # tokens found

    # -- accounting -------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def usage(self) -> float:
        """Fraction of usable blocks held by live sequences (cached-but-free blocks count as free)."""
        return 1.0 - len(self.free) / self.num_usable_blocks

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = seq.num_computed_tokens + num_new_tokens
        return max(0, -(-total // self.block_size) - len(seq.block_table))

    def min_blocks(self, num_tokens: int) -> int:
        """The fewest blocks a sequence of ``num_tokens`` tokens must hold at once to be computed alone.

        All of its blocks, or in window mode at most the blocks one token's window spans.
        """
        whole = -(-num_tokens // self.block_size)
        if not self.sliding_window:
            return whole
        return min(whole, -(-(self.sliding_window - 1) // self.block_size) + 1)

    @staticmethod
    def sliding_window_of(layers: Iterable[Any]) -> int | None:
        """The window for window mode: the largest ``sliding_window`` when every layer has one, else None."""
        windows = [getattr(layer, "sliding_window", None) for layer in layers]
        return max(windows) if windows and all(windows) else None

    def _first_needed(self, pos: int) -> int:
        """Window mode: the first block a query at ``pos`` (or later) can still attend to."""
        return max(0, (pos - self.sliding_window + 1) // self.block_size) if self.sliding_window else 0

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

        At least one token is always left to compute (its logits are needed). In window mode a
        hit of ``L`` tokens needs only the cached blocks the query at ``L`` sees (positions
        ``L - W + 1 .. L - 1``); the table holds the null block before them. Returns the number
        of tokens found; they are counted as computed.
        """
        if not self.enable_prefix_caching or seq.block_table or seq.params.prompt_logprobs is not None:
            return 0  # prompt_logprobs need every prompt position computed
        bs = self.block_size
        tokens = seq.token_ids
        salt, extra = seq.request.cache_salt, seq.request.cache_key_extra
        hashes: list[bytes] = []
        found, run = 0, 0  # blocks of the longest usable hit; cached blocks in a row up to block i
        for i in range((len(tokens) - 1) // bs):
            hashes.append(block_key(hashes[-1] if hashes else None, tokens[i * bs:(i + 1) * bs], salt, extra))
            run = run + 1 if hashes[-1] in self.cached else 0
            if run == 0 and not self.sliding_window:
                break  # without a window every block before the hit is needed
            if run >= i + 1 - self._first_needed((i + 1) * bs):
                found = i + 1
        self.prefix_queries += len(tokens)
        first = self._first_needed(found * bs)
        blocks = [self.null_block] * first + [self.cached[h] for h in hashes[first:found]]
        for block in blocks[first:]:
            if self.ref_counts[block] == 0:
                del self.free[block]
            self.ref_counts[block] += 1
        seq.block_table = blocks
        seq.block_hashes = hashes[:found]
        seq.num_hashed_blocks = found
        self.prefix_hits += found * bs
        seq.num_computed_tokens = found * bs
        return found * bs

    def fork(self, parent: Sequence, child: Sequence) -> int:
        """Share ``parent``'s full prompt blocks with ``child`` (an n > 1 sibling with the same prompt).

        At least one prompt token is left for the child to compute. Returns the tokens shared.
        """
        bs = self.block_size
        shared = min((child.num_prompt_tokens - 1) // bs, parent.num_computed_tokens // bs, len(parent.block_table))
        first = self._first_needed(shared * bs)
        if self.null_block in parent.block_table[first:shared]:
            shared = first = 0  # the parent dropped a block the child needs: the child starts afresh
        child.block_table = [self.null_block] * first + parent.block_table[first:shared]
        for block in child.block_table[first:]:
            self.ref_counts[block] += 1
        child.block_hashes = list(parent.block_hashes[:shared])
        child.num_hashed_blocks = len(child.block_hashes)
        child.num_computed_tokens = shared * bs
        return shared * bs

    def release_out_of_window(self, seq: Sequence) -> int:
        """Window mode: drop the blocks of ``seq`` no later query attends to; returns how many.

        Dropped entries become the null block; they always form a prefix of the table, so the
        walk back from the window's start stops at the first null entry.
        """
        table = seq.block_table
        i = min(self._first_needed(seq.num_computed_tokens), len(table)) - 1
        dropped = 0
        while i >= 0 and table[i] != self.null_block:
            self._unref(table[i])
            table[i] = self.null_block
            dropped += 1
            i -= 1
        return dropped

    def make_room(self, seq: Sequence) -> int:
        """Drop the out-of-window blocks of ``seq``; return how many new tokens of it the pool can hold now."""
        self.release_out_of_window(seq)
        return (len(seq.block_table) + len(self.free)) * self.block_size - seq.num_computed_tokens

    def allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for ``num_new_tokens`` more tokens of ``seq``; False (nothing taken) if full.

        In window mode the blocks ``seq`` no longer needs are dropped first (even when it fails).
        """
        self.release_out_of_window(seq)
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
            if block != self.null_block and h not in self.cached and self.block_hash[block] is None:
                self.cached[h] = block
                self.block_hash[block] = h
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)

    def free_seq(self, seq: Sequence) -> None:
        """Release every block of ``seq`` (last blocks first, so prefixes are evicted last)."""
        for block in reversed(seq.block_table):
            if block != self.null_block:
                self._unref(block)
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks = 0
        seq.block_hashes = []

    def _unref(self, block: int) -> None:
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free[block] = None  # cached: evict least recently used first
            if self.block_hash[block] is None:
                self.free.move_to_end(block, last=False)  # uncached: reuse first

    def evict_cached_free(self) -> int:
        """Forget the prefixes of every free block (blocks sequences hold stay cached); returns how
        many. They move to the front of the free queue, like any uncached block."""
        dropped = [b for b in self.free if self.block_hash[b] is not None]
        for block in dropped:
            h = self.block_hash[block]
            if self.cached.get(h) == block:
                del self.cached[h]
            self.block_hash[block] = None
            self.free.move_to_end(block, last=False)
        return len(dropped)

    def reset_prefix_cache(self) -> None:
        for h, block in list(self.cached.items()):
            self.block_hash[block] = None
            del self.cached[h]

    def check_no_leaks(self) -> None:
        """Raise if any block is still referenced (call when no sequence is alive)."""
        held = [b for b, r in enumerate(self.ref_counts) if r]
        if held or len(self.free) != self.num_usable_blocks or self.null_block in self.free:
            raise AssertionError(
                f"KV blocks leaked: {len(held)} referenced, {len(self.free)}/{self.num_usable_blocks} free"
            )
