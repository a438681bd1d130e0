"""Many prompts in one forward pass, each token evaluated once: prefix-tree packing.

A unit's prompts, sorted by token ids, are cut into forward passes, and each forward's prompts into
rows. All prompts of a forward share a common prefix, which the backend keeps in a one-sequence KV
cache and evaluates once. The rest of a row's prompts form a prefix tree; its nodes (one per
distinct token-in-context) are laid out depth-first in the row, each at the position it has in its
own prompt, and an attention mask lets a node see the shared prefix plus its own ancestors only.
Every prompt's last token then sees exactly its own tokens at their own positions, as in a fresh
evaluation of that prompt alone, so the next-token logits are the same up to float rounding, while
a forward costs (its rows x longest row) tokens instead of one forward per prompt of (its own
length) tokens. Rows are kept short (a few hundred nodes) because a row's attention grows with the
square of its length; many rows make a forward big enough to keep a CPU's or GPU's matrix units busy.

This module is plain numpy (no torch) so the layout is testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from makd_cli.teachers.base import common_prefix_len


@dataclass
class PackedChunk:
    members: list[int]     # indices (into the caller's prompt list) of the prompts in this chunk
    prefix: list[int]      # tokens every member starts with: evaluated once, through the cache
    tokens: np.ndarray     # (N,) the prefix tree's other nodes, depth-first
    positions: np.ndarray  # (N,) each node's position in its prompts
    parents: np.ndarray    # (N,) index of the parent node, -1 when the parent is the shared prefix
    last_node: np.ndarray  # (len(members),) the node holding each member's last token

    def visible(self) -> np.ndarray:
        """(N, N) bool: node i may attend to node j (j is i itself or one of its ancestors)."""
        n = len(self.tokens)
        vis = np.zeros((n, n), dtype=bool)
        for i, p in enumerate(self.parents):  # depth-first: a parent's row is complete before its children's
            if p >= 0:
                vis[i] = vis[p]
            vis[i, i] = True
        return vis


def shared_prefix_len(prompts: list[list[int]], members: list[int]) -> int:
    """Tokens every member starts with (members in sorted token order), leaving each at least one."""
    first, last = prompts[members[0]], prompts[members[-1]]  # sorted: the first and last bound the rest
    return max(0, min(common_prefix_len(first, last), min(len(prompts[m]) for m in members) - 1))


def pack(prompts: list[list[int]], members: list[int], shared: int | None = None) -> PackedChunk:
    """Pack ``prompts[m] for m in members`` (in sorted token order) into one row below a shared
    prefix of ``shared`` tokens (default: all the members share)."""
    seqs = [prompts[m] for m in members]
    if shared is None:
        shared = shared_prefix_len(prompts, members)
    tokens: list[int] = []
    parents: list[int] = []
    positions: list[int] = []
    last = np.empty(len(seqs), dtype=np.int64)
    path: list[int] = []  # node index at each depth below the shared prefix, for the previous prompt
    prev: list[int] | None = None
    for k, seq in enumerate(seqs):
        rest = seq[shared:]
        keep = common_prefix_len(prev, rest) if prev is not None else 0
        del path[keep:]
        for depth in range(keep, len(rest)):
            parents.append(path[-1] if path else -1)
            tokens.append(rest[depth])
            positions.append(shared + depth)
            path.append(len(tokens) - 1)
        last[k] = path[len(rest) - 1]
        prev = rest
    return PackedChunk(list(members), list(seqs[0][:shared]), np.asarray(tokens, dtype=np.int64),
                       np.asarray(positions, dtype=np.int64), np.asarray(parents, dtype=np.int64), last)


def plan_chunks(prompts: list[list[int]], order: list[int], max_prompts: int | None, max_nodes: int | None,
                skip: int = 0) -> list[list[int]]:
    """Cut ``order`` (prompt indices in sorted token order) into consecutive chunks of at most
    ``max_prompts`` prompts and about ``max_nodes`` tree nodes each below the first ``skip`` tokens
    (which every prompt shares; a prompt longer than the budget gets a chunk of its own)."""
    chunks: list[list[int]] = []
    cur: list[int] = []
    nodes = 0
    for i in order:
        new = len(prompts[i]) - (common_prefix_len(prompts[cur[-1]], prompts[i]) if cur else skip)
        if cur and ((max_prompts and len(cur) >= max_prompts) or (max_nodes and nodes + new > max_nodes)):
            chunks.append(cur)
            cur, nodes, new = [], 0, len(prompts[i]) - skip
        cur.append(i)
        nodes += new
    if cur:
        chunks.append(cur)
    return chunks


def plan_forwards(prompts: list[list[int]], order: list[int], row_nodes: int | None, forward_nodes: int | None,
                  max_prompts: int | None) -> list[list[list[int]]]:
    """Forward passes, each a list of rows, each a list of prompt indices, in sorted token order:
    rows of about ``row_nodes`` tree nodes, forwards of at most ``max_prompts`` prompts and about
    ``forward_nodes`` padded tokens (rows x longest row)."""
    base = shared_prefix_len(prompts, order)  # below what every prompt shares (the cached prefix at the least)
    rows = plan_chunks(prompts, order, max_prompts, row_nodes, skip=base)
    sizes = [len(prompts[r[0]]) - base + sum(len(prompts[b]) - common_prefix_len(prompts[a], prompts[b]) for a, b in zip(r, r[1:]))
             for r in rows]
    forwards: list[list[list[int]]] = []
    cur: list[list[int]] = []
    longest = count = 0
    for row, size in zip(rows, sizes):
        if cur and ((max_prompts and count + len(row) > max_prompts)
                    or (forward_nodes and (len(cur) + 1) * max(longest, size) > forward_nodes)):
            forwards.append(cur)
            cur, longest, count = [], 0, 0
        cur.append(row)
        longest, count = max(longest, size), count + len(row)
    if cur:
        forwards.append(cur)
    return forwards
