"""Static sparse draft trees: which top-k candidates of which heads to verify together in one
forward pass.

A tree is a list of paths of rank indices. ``(0,)`` is head 0's top-1 token (a child of the base
model's own next token), ``(0, 1)`` is head 1's second-ranked token under it, and so on: a path of
length d ends at depth d and uses head d-1 for its last element. Trees are stored as JSON so that a
tree calibrated on one model and language pair can be reused from the command line (``--tree
FILE``).
"""

from __future__ import annotations

import heapq
import json
import math
import reprlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from medusa.errors import MedusaError

TreePath = tuple[int, ...]

# Top-1 accuracy of heads 0..4: the figures FasterDecoding report measuring for their Vicuna-7B
# heads.
DEFAULT_TOP1: tuple[float, ...] = (0.56, 0.32, 0.20, 0.15, 0.12)
# Ranks below the first are NOT measured: they follow our own model, in which the chance that rank k
# is the
# correct token shrinks geometrically, acc[h][k] = top1[h] * RANK_DECAY ** k. With RANK_DECAY = 0.3
# the top-10
# cumulative accuracy is top1 * (1 - 0.3**10) / 0.7 ~= 1.43 * top1, i.e. 0.80 for the best head:
# always < 1.
# (A steeper decay favours deeper trees: with 0.3 the 63-node 5-head tree reaches depth 5; with 0.4
# it does not.)
MAX_TREE_DEPTH = 64  # the deepest tree file a tree strategy loads
RANK_DECAY = 0.3
DEFAULT_RANKS = 10
DEFAULT_ACCURACIES: list[list[float]] = [
    [round(top1 * RANK_DECAY**k, 8) for k in range(DEFAULT_RANKS)] for top1 in DEFAULT_TOP1
]

# a verify pass this wide already costs more than it can return on any hardware measured
MAX_TREE_NODES = 1024

# Node counts of the built-in trees by number of heads: small enough that one verify forward of
# (tree + 1) positions stays cheap, large enough to cover the likely continuations.
BUILTIN_SIZES: dict[int, int] = {1: 5, 2: 15, 3: 31, 4: 63, 5: 63}


def _shown(value: object) -> str:
    """``value`` for a message: nested or long lists cut short, so the line stays readable and never
    recurses."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxstring, short.maxother = 3, 8, 40, 40
    return short.repr(value)


def _sort_key(path: TreePath) -> tuple[int, TreePath]:
    return (len(path), path)


def validate_tree(paths: Iterable[Sequence[int]], num_heads: int) -> list[TreePath]:
    """Check that ``paths`` form a usable tree for ``num_heads`` heads; return them in canonical
    order.

    Canonical order (by depth, then lexicographic) puts every parent before its children, which is
    what the decoder's topological node list needs, and makes two spellings of the same tree compare
    equal.
    """
    if isinstance(paths, (str, bytes, dict)) or not isinstance(paths, Iterable):
        raise MedusaError(
            f"a tree must be a list of paths (lists of rank indices), got {type(paths).__name__}"
        )
    seen: set[TreePath] = set()
    out: list[TreePath] = []
    for raw in paths:
        if not isinstance(raw, (list, tuple)):
            raise MedusaError(f"tree path {_shown(raw)} is not a list of rank indices")
        if not raw:
            raise MedusaError("tree path [] is empty: every path needs at least one rank index")
        for x in raw:
            if isinstance(x, bool) or not isinstance(x, int):
                raise MedusaError(
                    f"tree path {_shown(list(raw))} holds {_shown(x)}: rank indices must be"
                    " integers"
                )
            if x < 0:
                raise MedusaError(
                    f"tree path {_shown(list(raw))} holds {x}: rank indices must be >= 0"
                )
        path = tuple(int(x) for x in raw)
        if len(path) > num_heads:
            raise MedusaError(
                f"tree path {list(path)} has depth {len(path)} but only {num_heads} Medusa head(s)"
                " are used: use a shallower tree or more heads"
            )
        if path in seen:
            raise MedusaError(f"tree path {list(path)} appears twice: list each path once")
        seen.add(path)
        out.append(path)
    if not out:
        raise MedusaError("the tree is empty: give at least one path, e.g. [[0]]")
    for path in out:
        if len(path) > 1 and path[:-1] not in seen:
            raise MedusaError(
                f"tree path {list(path)} has no parent {list(path[:-1])} in the tree: add every"
                " prefix of each path"
            )
    return sorted(out, key=_sort_key)


def _validate_any_depth(paths: Iterable[Sequence[int]]) -> list[TreePath]:
    """:func:`validate_tree` without a head-count limit, for callers that do not know the model."""
    if isinstance(paths, (str, bytes, dict)) or not isinstance(paths, Iterable):
        return validate_tree(paths, 0)  # raises the usual message
    raw = list(paths)
    depth = max((len(p) for p in raw if isinstance(p, (list, tuple))), default=0)
    return validate_tree(raw, depth)


def _check_accuracies(accuracies: Sequence[Sequence[float]]) -> list[list[float]]:
    """Reject accuracy tables that would break the search (a value > 1 lets a child outrank its
    parent)."""
    if not isinstance(accuracies, (list, tuple)) or not accuracies:
        raise MedusaError(
            "accuracy table is empty or not a list: give one row of per-rank accuracies per head"
        )
    table: list[list[float]] = []
    for h, row in enumerate(accuracies):
        if not isinstance(row, (list, tuple)):
            raise MedusaError(
                f"accuracy row of head {h} is {_shown(row)}: give a list of per-rank accuracies per"
                " head"
            )
        if not row:
            raise MedusaError(
                f"accuracy row of head {h} is empty: give at least the top-1 accuracy"
            )
        clean = []
        for k, a in enumerate(row):
            if (
                isinstance(a, bool)
                or not isinstance(a, (int, float))
                or not (0.0 <= float(a) <= 1.0)
            ):
                raise MedusaError(
                    f"accuracy of head {h} rank {k} is {_shown(a)}: it must be a probability in "
                    "[0, 1]"
                )
            clean.append(float(a))
        table.append(clean)
    return table


def _path_product(path: TreePath, table: list[list[float]]) -> float:
    prob = 1.0
    for depth, rank in enumerate(path):
        row = table[depth]
        if rank >= len(row):
            raise MedusaError(
                f"tree path {list(path)} uses rank {rank} of head {depth}, but accuracies cover"
                f" only {len(row)} rank(s): measure more ranks or use a narrower tree"
            )
        prob *= row[rank]
    return prob


def optimal_tree(
    accuracies: list[list[float]], size: int, max_depth: int | None = None
) -> list[TreePath]:
    """The ``size`` paths with the largest acceptance probabilities, i.e. the tree maximising
    expected length.

    Since a child's probability never exceeds its parent's, a best-first search from the root pops
    paths in exactly the global order (probability descending; ties: shorter path, then
    lexicographically smaller), so the result is closed under prefixes without enumerating the
    exponential path space.
    """
    table = _check_accuracies(accuracies)
    depth_limit = len(table) if max_depth is None else min(max_depth, len(table))
    if depth_limit < 1:
        raise MedusaError(f"max_depth is {max_depth}: a tree needs depth >= 1")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise MedusaError(f"tree size is {size!r}: ask for at least 1 node")
    available, layer = 0, 1
    for row in table[:depth_limit]:
        layer *= len(row)
        available += layer
        if available >= size:
            break
    if available < size:
        raise MedusaError(
            f"a tree of {size} nodes is impossible with depth {depth_limit} and the measured ranks "
            f"(at most {available} paths): ask for a smaller tree"
        )
    heap: list[tuple[float, int, TreePath]] = []

    def push_children(parent: TreePath, prob: float) -> None:
        depth = len(parent)
        if depth < depth_limit:
            for rank, a in enumerate(table[depth]):
                child = parent + (rank,)
                heapq.heappush(heap, (-(prob * a), len(child), child))

    push_children((), 1.0)
    chosen: list[TreePath] = []
    while len(chosen) < size:
        neg_prob, _, path = heapq.heappop(heap)
        chosen.append(path)
        push_children(path, -neg_prob)
    return sorted(chosen, key=_sort_key)


def expected_accept_length(paths: Iterable[Sequence[int]], accuracies: list[list[float]]) -> float:
    """Tokens committed per step under independent heads: 1 (the base token) + sum of path
    probabilities."""
    table = _check_accuracies(accuracies)
    tree = validate_tree(paths, len(table))
    return 1.0 + math.fsum(_path_product(p, table) for p in tree)


def builtin_tree(num_heads: int) -> list[TreePath]:
    """A tree for 1..5 heads, optimal under :data:`DEFAULT_ACCURACIES`; use when nothing was
    calibrated."""
    if num_heads not in BUILTIN_SIZES:
        raise MedusaError(
            f"no built-in tree for {num_heads} Medusa head(s) (built-in trees cover 1-5): pass"
            " --tree FILE (e.g. one written by calibration)"
        )
    return optimal_tree(DEFAULT_ACCURACIES[:num_heads], BUILTIN_SIZES[num_heads])


def _read_tree_json(path: str):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise MedusaError(f"cannot read tree file {path}: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise MedusaError(
            f"tree file {path} is not valid JSON (line {e.lineno}: {e.msg})"
        ) from None
    except RecursionError:  # lists nested thousands deep: no tree is (a path is one flat list)
        raise MedusaError(
            f"tree file {path} nests its lists too deeply to be a tree: write a list of flat paths "
            "such as [[0], [0, 0], [1]]"
        ) from None


def load_tree(path: str, num_heads: int) -> list[TreePath]:
    """Read a tree file: a JSON list of paths, or an object whose ``"paths"`` holds them (extra keys
    ignored)."""
    data = _read_tree_json(path)
    if isinstance(data, dict):
        if "paths" not in data:
            raise MedusaError(
                f'tree file {path} has no "paths" key: write {{"paths": [[0], [0, 0], ...]}}'
            )
        data = data["paths"]
    if not isinstance(data, list):
        raise MedusaError(f"tree file {path} must hold a list of paths such as [[0], [0, 0], [1]]")
    # the verify pass's attention mask grows with the square of the node count
    if len(data) > MAX_TREE_NODES:
        raise MedusaError(
            f"tree file {path} has {len(data)} paths, more than the {MAX_TREE_NODES} a tree may"
            " have: use a smaller tree (calibrate-tree --tree-size N writes one)"
        )
    try:
        return validate_tree(data, num_heads)
    except MedusaError as e:
        raise MedusaError(f"tree file {path}: {e}") from None


def resized_tree(path: str | None, num_heads: int, size: int) -> list[TreePath]:
    """The optimal ``size``-node tree from the accuracies a calibrated tree file keeps (all its
    heads; no file: the defaults for ``num_heads``), so one calibration serves a GPU, where a wide
    verify pass is nearly free, and a CPU, where every node costs about a token's forward pass."""
    if size > MAX_TREE_NODES:
        raise MedusaError(f"--tree-size {size} is too big: at most {MAX_TREE_NODES} nodes")
    if path is None:
        if not 1 <= num_heads <= len(DEFAULT_ACCURACIES):
            raise MedusaError(
                f"no default accuracies for {num_heads} heads (1-{len(DEFAULT_ACCURACIES)}): "
                "pass --tree FILE written by calibrate-tree"
            )
        accuracies = DEFAULT_ACCURACIES[:num_heads]
    else:
        data = _read_tree_json(path)
        accuracies = data.get("accuracies") if isinstance(data, dict) else None
        if not accuracies:
            raise MedusaError(
                f"tree file {path} keeps no calibration accuracies, so --tree-size cannot rebuild "
                "it: use a tree written by calibrate-tree, or drop --tree-size"
            )
    try:
        return optimal_tree(accuracies, size)
    except MedusaError as e:
        hint = (
            f" (or raise -nmh: the built-in accuracies cover {num_heads} heads)"
            if path is None
            else ""
        )
        raise MedusaError(f"--tree-size {size}: {e}{hint}") from None


def save_tree(paths: Iterable[Sequence[int]], path: str, meta: dict | None = None) -> None:
    """Write ``{"paths": [...], **meta}`` with one path per line, readable and diffable by hand."""
    meta = dict(meta or {})
    if "paths" in meta:
        raise ValueError('meta must not contain "paths"')
    tree = [list(p) for p in _validate_any_depth(paths)]
    lines = ",\n".join("    " + json.dumps(p) for p in tree)
    body = ['  "paths": [\n' + lines + "\n  ]"]
    for key, value in meta.items():
        dumped = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        body.append(f"  {json.dumps(str(key))}: {dumped}")
    Path(path).write_text("{\n" + ",\n".join(body) + "\n}\n", encoding="utf-8")


def tree_nodes(paths: Iterable[Sequence[int]]) -> tuple[list[int], list[int], list[int]]:
    """Flatten a tree for the decoder: per node (canonical order) its parent index, head and rank.

    Depth-1 nodes get parent -1: they hang off the base model's own next token, which is not in the
    list.
    """
    tree = _validate_any_depth(paths)
    index = {p: i for i, p in enumerate(tree)}
    parents = [index[p[:-1]] if len(p) > 1 else -1 for p in tree]
    heads = [len(p) - 1 for p in tree]
    ranks = [p[-1] for p in tree]
    return parents, heads, ranks
