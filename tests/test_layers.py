"""The package's rooms import only downwards: every import of every module of medusa/ (at the top of
the file or inside a function, absolute or relative) points to its own room, a room on a lower line
of LAYERS, or along one of the SIDEWAYS edges, and no imports form a circle between rooms.
docs/architecture.md ("The rooms") holds the same table."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "medusa"

# Bottom to top. A module may import its own room, the rooms on lower lines, and the SIDEWAYS edges.
LAYERS = [
    ["base"],  # BASE below: leaf utilities that any room may use
    ["drafters"],  # the drafter kinds and their registry: components the model composes
    ["model"],  # the model, its drafter, checkpoint files, adapters, batched generation
    ["decoding"],  # strategies, the tree format, loops, engines
    ["evaluation", "measure", "training", "grading"],  # siblings, joined only by SIDEWAYS
    ["runtime"],  # threads and data-parallel processes
    ["top"],  # TOP below: the commands
]
BASE = {
    "medusa",
    "medusa.errors",
    "medusa.console",
    "medusa.arg_types",
    "medusa.locking",
    "medusa.output_dir",
}
TOP = {"medusa.settings", "medusa.runner", "medusa.cli", "medusa.__main__"}
# importer -> imported, between siblings of one line; they form no circle
SIDEWAYS = {
    ("grading", "evaluation"),  # metrics and result files of the graded runs
    ("measure", "evaluation"),  # data, prompts, the prompt style's last word
    ("measure", "training"),  # the context drafter's teacher-forced rollout, for calibrate-tree
    ("training", "evaluation"),  # data, prompts, metrics, result files
}

LEVEL = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str | None:
    if module in BASE:
        return "base"
    if module in TOP:
        return "top"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LEVEL and parts[1] not in ("base", "top"):
        return parts[1]
    return None


def _is_module(name: str, root: Path) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported module of the package) for every import in ``path``, however deep in a
    function."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from medusa import errors` imports the module medusa.errors
                name = f"{source}.{alias.name}"
                found.append((node.lineno, name if _is_module(name, root) else source))
    return [
        (line, name)
        for line, name in found
        if name == root.name or name.startswith(root.name + ".")
    ]


def room_edges(root: Path = ROOT) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(modules no room holds, [(importer room, imported room, "file:line")]) for the package at
    ``root``."""
    unplaced, edges = [], []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root.parent).as_posix()
        source = room_of(module_name(path, root))
        if source is None:
            unplaced.append(where)
            continue
        for line, target in imports_of(path, root):
            room = room_of(target)
            if room is None:
                unplaced.append(f"{target} (imported at {where}:{line})")
            elif room != source and (source, room, f"{where}:{line}") not in edges:
                edges.append((source, room, f"{where}:{line}"))
    return unplaced, edges


def back_edges(edges: list[tuple[str, str, str]]) -> list[str]:
    """Every import that points up the order, or sideways along no SIDEWAYS edge."""
    return [
        f"{at}: {source} imports {target}"
        for source, target, at in edges
        if LEVEL[target] > LEVEL[source]
        or (LEVEL[target] == LEVEL[source] and (source, target) not in SIDEWAYS)
    ]


def circles(edges: list[tuple[str, str, str]]) -> list[str]:
    """Every import between two rooms that reach each other (an edge on a circle of rooms)."""
    graph: dict[str, set[str]] = {}
    for source, target, _ in edges:
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            room = todo.pop()
            if room == goal:
                return True
            if room not in seen:
                seen.add(room)
                todo += graph.get(room, ())
        return False

    return [
        f"{at}: {source} imports {target}, and {target} reaches {source} back"
        for source, target, at in edges
        if reaches(target, source)
    ]


def test_every_module_has_a_room():
    unplaced, _ = room_edges()
    assert not unplaced, "modules no room of LAYERS holds (add them to the table): " + ", ".join(
        unplaced
    )


def test_imports_point_down_and_form_no_circle():
    _, edges = room_edges()
    assert edges  # the walk sees the package's imports
    problems = back_edges(edges) + circles(edges)
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_the_sideways_edges_form_no_circle():
    assert not circles([(a, b, "SIDEWAYS") for a, b in SIDEWAYS])
    assert all(LEVEL[a] == LEVEL[b] for a, b in SIDEWAYS)


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "medusa"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [package, *[p for p in package.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return package


def test_the_checker_catches_a_planted_back_edge(tmp_path):
    package = _plant(
        tmp_path,
        {
            "errors.py": "",
            "decoding/trees.py": "from medusa.errors import MedusaError\n",
            "model/loader.py": (
                "import os\n\n\ndef load():\n    from ..decoding import trees\n    return trees\n"
            ),
            "model/heads.py": (
                "from . import loader\nfrom medusa.runtime.threads import apply_threads\n"
            ),
            "runtime/threads.py": "def apply_threads():\n    pass\n",
        },
    )
    unplaced, edges = room_edges(package)
    assert not unplaced
    assert ("decoding", "base", "medusa/decoding/trees.py:1") in edges
    assert back_edges(edges) == ["medusa/model/heads.py:2: model imports runtime",
                                 "medusa/model/loader.py:5: model imports decoding"]


def test_the_checker_catches_a_circle_and_a_sideways_edge_not_allowed(tmp_path):
    package = _plant(tmp_path, {
        "grading/launch.py": "from medusa.evaluation import metrics\n",
        "evaluation/metrics.py": "def check():\n    import medusa.grading.launch\n",
        "evaluation/preflight.py": "from medusa import cli\n",
        "cli.py": "",
        "lost.py": "",
    })
    unplaced, edges = room_edges(package)
    assert unplaced == ["medusa/lost.py"]
    assert back_edges(edges) == ["medusa/evaluation/metrics.py:2: evaluation imports grading",
                                 "medusa/evaluation/preflight.py:1: evaluation imports top"]
    assert circles(edges) == [
        (
            "medusa/evaluation/metrics.py:2: evaluation imports grading, and grading reaches"
            " evaluation back"
        ),
        (
            "medusa/grading/launch.py:1: grading imports evaluation, and evaluation reaches grading"
            " back"
        ),
    ]
