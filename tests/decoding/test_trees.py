"""Static sparse trees: validation, the best-first optimal tree (checked by brute force), files,
decoder layout."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from medusa.decoding.base import Tree
from medusa.errors import MedusaError
from medusa.decoding.trees import (
    DEFAULT_ACCURACIES,
    builtin_tree,
    expected_accept_length,
    load_tree,
    optimal_tree,
    resized_tree,
    save_tree,
    tree_nodes,
    validate_tree,
)

# ---------------------------------------------------------------- validate_tree


def test_validate_tree_returns_canonical_order():
    paths = [[1, 0], (0,), [0, 0, 2], (1,), [0, 0], [0, 1]]
    assert validate_tree(paths, 3) == [(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 2)]


@pytest.mark.parametrize(
    "paths, num_heads, fragment",
    [
        ([[0], [1, 0]], 2, "[1, 0]"),  # parent (1,) missing
        ([[0], [0, 0], [0, 0, 0], [1, 1, 1]], 3, "[1, 1, 1]"),  # grandparent chain missing
        ([[0], [-1]], 2, "-1"),
        ([[0], [0, 0], [0, 0, 0]], 2, "depth 3"),
        ([[0], [0, 0], [0]], 2, "twice"),
        ([[0], [0, "1"]], 2, "'1'"),
        ([[0], [0, 1.0]], 2, "1.0"),
        ([[0], [True]], 2, "True"),
        ([[0], 3], 2, "3"),
        ([[0], []], 2, "empty"),
        ([], 2, "empty"),
        ("[[0]]", 2, "list of paths"),
    ],
)
def test_validate_tree_rejects(paths, num_heads, fragment):
    with pytest.raises(MedusaError) as err:
        validate_tree(paths, num_heads)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- optimal_tree / expected length


def test_optimal_tree_hand_case():
    acc = [[0.6, 0.2], [0.5, 0.1]]
    # products: (0,)=.6 (0,0)=.3 (1,)=.2 (1,0)=.1 (0,1)=.06 (1,1)=.02
    tree = optimal_tree(acc, 3)
    assert set(tree) == {(0,), (0, 0), (1,)}
    assert tree == [(0,), (1,), (0, 0)]
    assert expected_accept_length(tree, acc) == pytest.approx(1 + 0.6 + 0.3 + 0.2)
    assert optimal_tree(acc, 4) == [(0,), (1,), (0, 0), (1, 0)]
    assert optimal_tree(acc, 6) == [(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]


def test_optimal_tree_ties_prefer_shorter_then_lexicographic():
    acc = [[0.5, 0.5], [1.0, 0.5]]  # (0,)=(1,)=(0,0)=(1,0)=0.5
    assert optimal_tree(acc, 1) == [(0,)]
    assert optimal_tree(acc, 2) == [(0,), (1,)]
    assert optimal_tree(acc, 3) == [(0,), (1,), (0, 0)]
    assert optimal_tree([[1.0], [1.0], [1.0]], 2) == [(0,), (0, 0)]


def test_optimal_tree_respects_max_depth():
    acc = [[0.9, 0.01], [0.9, 0.01]]
    assert optimal_tree(acc, 2) == [(0,), (0, 0)]
    assert optimal_tree(acc, 2, max_depth=1) == [(0,), (1,)]


def _all_paths(heads: int, ranks: int) -> list[tuple[int, ...]]:
    return [p for d in range(1, heads + 1) for p in itertools.product(range(ranks), repeat=d)]


@pytest.mark.parametrize("seed", range(6))
def test_optimal_tree_matches_brute_force(seed):
    rng = random.Random(seed)
    if seed == 0:
        acc = [[0.5, 0.5, 0.25], [1.0, 0.5, 0.5]]  # lots of ties
    elif seed == 1:
        # ranks out of order, as noisy measurements can be
        acc = [[0.2, 0.6, 0.1], [0.05, 0.9, 0.3]]
    else:
        acc = [[round(rng.random(), 2) for _ in range(3)] for _ in range(2)]
    paths = _all_paths(2, 3)
    for n in range(1, 6):
        best = max(
            expected_accept_length(subset, acc)
            for subset in itertools.combinations(paths, n)
            if all(len(p) == 1 or p[:-1] in subset for p in subset)
        )
        tree = optimal_tree(acc, n)
        assert len(tree) == n
        assert validate_tree(tree, 2) == tree
        assert expected_accept_length(tree, acc) == pytest.approx(best, abs=1e-12)


def test_optimal_tree_never_enumerates_the_path_space():
    acc = [[0.9 * 0.8**k for k in range(50)] for _ in range(12)]  # 50**12 paths
    tree = optimal_tree(acc, 200)
    assert len(tree) == 200 and validate_tree(tree, 12) == tree


@pytest.mark.parametrize(
    "acc, size, fragment",
    [
        ([[0.5, 1.2]], 1, "[0, 1]"),
        ([[0.5, -0.1]], 1, "[0, 1]"),
        ([], 1, "empty"),
        ([[0.5], []], 1, "head 1"),
        ([[0.5, 0.2]], 0, "at least 1"),
        ([[0.5, 0.2], [0.3]], 5, "at most 4"),
    ],
)
def test_optimal_tree_rejects(acc, size, fragment):
    with pytest.raises(MedusaError) as err:
        optimal_tree(acc, size)
    assert fragment in str(err.value)


def test_expected_accept_length_rejects_unmeasured_rank():
    with pytest.raises(MedusaError, match="rank 3 of head 0"):
        expected_accept_length([(3,)], [[0.5, 0.2]])


# ---------------------------------------------------------------- defaults and built-in trees


def test_default_accuracies_shape():
    assert len(DEFAULT_ACCURACIES) == 5 and all(len(row) == 10 for row in DEFAULT_ACCURACIES)
    assert [row[0] for row in DEFAULT_ACCURACIES] == [0.56, 0.32, 0.20, 0.15, 0.12]
    for row in DEFAULT_ACCURACIES:
        assert all(a > b > 0 for a, b in zip(row, row[1:]))
        assert sum(row) < 1


@pytest.mark.parametrize("heads, size", [(1, 5), (2, 15), (3, 31), (4, 63), (5, 63)])
def test_builtin_tree(heads, size):
    tree = builtin_tree(heads)
    assert len(tree) == size
    assert validate_tree(tree, heads) == tree
    assert max(len(p) for p in tree) == heads  # every head is used
    assert tree == optimal_tree(DEFAULT_ACCURACIES[:heads], size)
    parents, _, _ = tree_nodes(tree)
    # the decoder's own invariant: parents come first
    Tree(tokens=list(range(size)), parents=parents)


@pytest.mark.parametrize("heads", [0, 6, -1])
def test_builtin_tree_outside_range(heads):
    with pytest.raises(MedusaError, match="--tree FILE"):
        builtin_tree(heads)


# ---------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path):
    tree = builtin_tree(3)
    file = tmp_path / "tree.json"
    save_tree(
        list(reversed(tree)), str(file), meta={"model": "tiny", "expected_accept_length": 2.25}
    )
    data = json.loads(file.read_text())
    assert data["paths"] == [list(p) for p in tree]
    assert data["model"] == "tiny" and data["expected_accept_length"] == 2.25
    assert load_tree(str(file), 3) == tree
    assert load_tree(str(file), 5) == tree  # a shallower tree is fine with more heads


def test_load_plain_list(tmp_path):
    file = tmp_path / "plain.json"
    file.write_text("[[0, 0], [0], [1]]")
    assert load_tree(str(file), 2) == [(0,), (1,), (0, 0)]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[[0], [0, 0]", "not valid JSON"),
        ('{"tree": [[0]]}', '"paths"'),
        ('{"paths": {"a": 1}}', "list of paths"),
        ("42", "list of paths"),
        ('[[0], ["0", 1]]', "integers"),
        ('["0"]', "not a list"),
        ("[[0], [0, 0], [0, 0, 0]]", "depth 3"),
        ("[[0], [1, 0]]", "no parent"),
    ],
)
def test_load_tree_rejects_malformed(tmp_path, text, fragment):
    file = tmp_path / "bad-tree.json"
    file.write_text(text)
    with pytest.raises(MedusaError) as err:
        load_tree(str(file), 2)
    assert str(file) in str(err.value)
    assert fragment in str(err.value)


def test_load_tree_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(MedusaError, match="nope.json"):
        load_tree(str(missing), 2)


# ---------------------------------------------------------------- decoder layout


def test_tree_nodes_hand_drawn():
    #   root ─ (0,) ─ (0,0) ─ (0,0,1)
    #        │      └ (0,1)
    #        └ (1,) ─ (1,0)
    paths = [(1,), (0, 0, 1), (0,), (0, 1), (0, 0), (1, 0)]
    parents, heads, ranks = tree_nodes(paths)
    # canonical order: (0,) (1,) (0,0) (0,1) (1,0) (0,0,1)
    assert parents == [-1, -1, 0, 0, 1, 2]
    assert heads == [0, 0, 1, 1, 1, 2]
    assert ranks == [0, 1, 0, 1, 0, 1]


def test_tree_nodes_rejects_invalid():
    with pytest.raises(MedusaError, match="no parent"):
        tree_nodes([(0,), (1, 1)])


# ---------------------------------------------------------------- resized_tree


def test_resized_tree_rebuilds_from_stored_accuracies(tmp_path):
    accuracies = [[0.6, 0.2, 0.1], [0.4, 0.2, 0.1], [0.3, 0.1, 0.05]]
    file = tmp_path / "tree.json"
    save_tree(optimal_tree(accuracies, 12), str(file), meta={"accuracies": accuracies})
    for size in (1, 5, 12, 20):
        tree = resized_tree(str(file), 99, size)
        assert tree == optimal_tree(accuracies, size) and len(tree) == size
    assert expected_accept_length(resized_tree(str(file), 3, 5), accuracies) < \
        expected_accept_length(resized_tree(str(file), 3, 20), accuracies)


def test_resized_tree_without_file_uses_the_defaults():
    assert resized_tree(None, 3, 31) == builtin_tree(3)
    assert resized_tree(None, 2, 7) == optimal_tree(DEFAULT_ACCURACIES[:2], 7)
    with pytest.raises(MedusaError, match="calibrate-tree"):
        resized_tree(None, 6, 7)


def test_resized_tree_refuses_huge_trees_and_bad_tables(tmp_path):
    with pytest.raises(MedusaError, match="at most 1024"):
        resized_tree(None, 5, 5000)
    with pytest.raises(MedusaError, match="raise -nmh"):
        resized_tree(None, 2, 127)
    file = tmp_path / "flat.json"
    for bad in ([0.5, 0.3], 0.5, [[0.5], "x"]):
        file.write_text(json.dumps({"paths": [[0]], "accuracies": bad}))
        with pytest.raises(MedusaError):
            resized_tree(str(file), 1, 1)


def test_shipped_tree_is_the_optimal_tree_of_its_calibration():
    from pathlib import Path

    import medusa

    data = json.loads((Path(medusa.__file__).parent / "embedded_default" / "tree.json").read_text())
    paths = [tuple(p) for p in data["paths"]]
    assert len(paths) == 127 and paths == optimal_tree(data["accuracies"], len(paths))
    assert expected_accept_length(paths, data["accuracies"]) == pytest.approx(
        data["expected_tokens_per_step"]
    )
    assert data["expected_tokens_per_step"] > 2.5


def test_resized_tree_needs_accuracies(tmp_path):
    file = tmp_path / "plain.json"
    file.write_text(json.dumps({"paths": [[0], [1]]}))
    with pytest.raises(MedusaError, match="keeps no calibration accuracies"):
        resized_tree(str(file), 2, 3)
    file.write_text(json.dumps([[0], [1]]))
    with pytest.raises(MedusaError, match="keeps no calibration accuracies"):
        resized_tree(str(file), 2, 3)
    save_tree([[0]], str(file), meta={"accuracies": [[0.5, 0.2]]})
    # 2 paths at most with one head, two ranks
    with pytest.raises(MedusaError, match="--tree-size 9"):
        resized_tree(str(file), 1, 9)
