"""The layers import only downwards, nothing imports in a circle, and no two modules under align/ share a name.

Read from the source with `ast` (nothing is imported): every import of align.* or data_prep.* in align/ and data_prep/,
at module level or inside a function, absolute or relative, and every importlib.import_module("align..." or
f"data_prep.{name}") whose module name starts with a literal. benchmarks/ and tests/ are outside the layering.

The layers, lowest first (a module may import its own layer and any layer of lower rank; two layers of the same rank
may not import each other):

    0  core         align/core/        config, contracts, records, tokens, hub, errors
    1  runtime      align/runtime/     runs, checkpoints, preemption, guards, allocator, distributed
    1  data_prep    data_prep/         building the data files (on align.core only)
    2  modeling     align/modeling/    loading and running models
    3  evaluation   align/evaluation/  sampling, scoring, judging, RM eval, tables
    3  rlhf         align/rlhf/        PPO
    4  trainers     align/trainers/    TRL glue, the Trainer-based stages and the PPO alternatives
    5  entry        align/*.py         the stage entry points (python -m align.<stage>) and align/__init__.py
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO

PACKAGES = ("align", "data_prep")

RANKS = {"core": 0, "runtime": 1, "data_prep": 1, "modeling": 2, "evaluation": 3, "rlhf": 3, "trainers": 4, "entry": 5}
ALIGN_LAYERS = {"core", "runtime", "modeling", "evaluation", "rlhf", "trainers"}  # the folders under align/


@dataclass(frozen=True)
class Import:
    file: str  # path relative to the repository, e.g. "align/core/config.py"
    line: int
    statement: str  # the import as written
    importer: str  # dotted module name of the file
    target: str  # dotted module name imported (a module, or the package when the name is not a module)
    dynamic: bool = False  # importlib.import_module with a name built at run time: the target is only its package

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: str) -> str:
    """'align/core/config.py' -> 'align.core.config'; 'align/core/__init__.py' -> 'align.core'."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package_file(path: str) -> bool:
    return Path(path).name == "__init__.py"


def layer_of(module: str, packages: set[str]) -> str | None:
    """The layer of a dotted module name, or None for a module in no layer (a new folder under align/)."""
    parts = module.split(".")
    if parts[0] == "data_prep":
        return "data_prep"
    if parts[0] != "align":
        return None
    if len(parts) == 1:
        return "entry"  # align/__init__.py
    if parts[1] in ALIGN_LAYERS:
        return parts[1]
    if f"align.{parts[1]}" in packages:
        return None  # a folder under align/ that is in no layer
    return "entry"


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _resolve(name: str, known: set[str]) -> str:
    """The longest prefix of `name` that is a known module (align.core.config.Config -> align.core.config)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return name


def _dynamic_name(call: ast.Call) -> str | None:
    """The literal module name (or its literal prefix, up to the last dot) of importlib.import_module / __import__."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called not in ("import_module", "__import__") or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return prefix.rpartition(".")[0] or None
    return None


def imports_in(path: str, source: str, known: set[str]) -> list[Import]:
    """Every import of align.* / data_prep.* in one file, wherever it stands in the file."""
    importer = module_name(path)
    package = importer if is_package_file(path) else importer.rpartition(".")[0]
    lines = source.splitlines()
    found = []

    def add(node: ast.AST, target: str, dynamic: bool = False) -> None:
        if _ours(target):
            statement = lines[node.lineno - 1].strip()
            found.append(Import(path, node.lineno, statement, importer, target, dynamic))

    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, _resolve(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(node, submodule if submodule in known else _resolve(base, known))
        elif isinstance(node, ast.Call) and (name := _dynamic_name(node)):
            add(node, _resolve(name, known), dynamic=True)
    return found


def collect(sources: dict[str, str]) -> tuple[list[Import], set[str], set[str]]:
    """All imports of the given files ({path: source}), their module names, and which of those are packages."""
    known = {module_name(path) for path in sources}
    packages = {module_name(path) for path in sources if is_package_file(path)}
    imports = [imp for path, source in sorted(sources.items()) for imp in imports_in(path, source, known)]
    return imports, known, packages


def layer_violations(sources: dict[str, str]) -> list[str]:
    """One line per import that does not go downwards (or stay in its own layer), naming file:line and both layers."""
    imports, _, packages = collect(sources)
    problems = []
    for path in sorted(sources):
        if layer_of(module_name(path), packages) is None:
            problems.append(f"{path}: in no layer (add its folder to RANKS in tests/test_layers.py)")
    for imp in imports:
        here, there = layer_of(imp.importer, packages), layer_of(imp.target, packages)
        if here is None or there is None or here == there or RANKS[there] < RANKS[here]:
            continue
        direction = "sideways" if RANKS[there] == RANKS[here] else "upwards"
        kind = "dynamic import" if imp.dynamic else "import"
        problems.append(f"{imp.where}: `{imp.statement}` imports {imp.target}: layer {here} (rank {RANKS[here]}) -> "
                        f"layer {there} (rank {RANKS[there]}), {direction} ({kind})")
    return problems


def import_cycles(sources: dict[str, str]) -> list[str]:
    """One line per import circle among the modules (static imports only), naming the modules and where they import."""
    imports, known, _ = collect(sources)
    edges: dict[str, dict[str, Import]] = defaultdict(dict)
    for imp in imports:
        if not imp.dynamic and imp.target in known and imp.target != imp.importer:
            edges[imp.importer].setdefault(imp.target, imp)

    # Tarjan's strongly connected components; every component of more than one module holds a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(known):
        if node not in index:
            visit(node)

    problems = []
    for component in components:
        members = set(component)
        start = component[0]
        # The shortest path from start back to itself inside the component, found breadth first.
        previous: dict[str, str] = {}
        frontier, seen, closing = [start], {start}, None
        while frontier and closing is None:
            following = []
            for node in frontier:
                for nxt in sorted(edges[node]):
                    if nxt == start:
                        closing = node
                        break
                    if nxt in members and nxt not in seen:
                        seen.add(nxt)
                        previous[nxt] = node
                        following.append(nxt)
                if closing is not None:
                    break
            frontier = following
        path = [closing]
        while path[-1] != start:
            path.append(previous[path[-1]])
        path.reverse()
        cycle = [*path, start]
        steps = "; ".join(f"{edges[a][b].where} `{edges[a][b].statement}`" for a, b in zip(cycle, cycle[1:]))
        problems.append(f"{' -> '.join(cycle)} ({steps})")
    return problems


def repeated_stems(paths: list[str]) -> list[str]:
    """One line per module file name (__init__ aside) that appears in more than one folder."""
    by_stem = defaultdict(list)
    for path in paths:
        if Path(path).stem != "__init__":
            by_stem[Path(path).stem].append(path)
    return [f"{stem}: {', '.join(sorted(where))}" for stem, where in sorted(by_stem.items()) if len(where) > 1]


def tree_sources() -> dict[str, str]:
    """Every .py file under align/ and data_prep/ ({path relative to the repository: source})."""
    return {path.relative_to(REPO).as_posix(): path.read_text()
            for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


# ---------------------------------------------------------------- the tree as it is


def test_the_tree_is_found():
    sources = tree_sources()
    assert "align/core/config.py" in sources and "data_prep/prepare.py" in sources
    imports, _, _ = collect(sources)
    assert len(imports) > 50, "the scan finds almost no imports: is the checker broken?"


def test_layers_import_only_downwards():
    problems = layer_violations(tree_sources())
    assert not problems, "imports that do not go down the layers:\n" + "\n".join(problems)


def test_no_import_circle():
    cycles = import_cycles(tree_sources())
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_no_module_name_appears_twice_under_align():
    paths = [path for path in tree_sources() if path.startswith("align/")]
    repeated = repeated_stems(paths)
    assert not repeated, "module names used more than once under align/:\n" + "\n".join(repeated)


# ---------------------------------------------------------------- the checker can fail


def with_tree(extra: dict[str, str]) -> dict[str, str]:
    """The real tree plus synthetic files ({path: source})."""
    return {**tree_sources(), **extra}


def test_checker_reports_an_upward_import():
    source = "import os\nfrom align.modeling.models import x\n"
    problems = layer_violations(with_tree({"align/core/fake_upward.py": source}))
    assert len(problems) == 1 + len(layer_violations(tree_sources())), problems
    (problem,) = [p for p in problems if "fake_upward" in p]
    assert problem.startswith("align/core/fake_upward.py:2: `from align.modeling.models import x`"), problem
    assert "layer core (rank 0) -> layer modeling (rank 2), upwards" in problem


def test_checker_reports_a_relative_import_inside_a_function_and_a_sideways_one():
    source = "def f():\n    from ..evaluation import sampling\n    return sampling\n"
    problems = layer_violations(with_tree({"align/rlhf/fake_sideways.py": source}))
    (problem,) = [p for p in problems if "fake_sideways" in p]
    assert problem.startswith("align/rlhf/fake_sideways.py:2:") and "imports align.evaluation.sampling" in problem
    assert "layer rlhf (rank 3) -> layer evaluation (rank 3), sideways" in problem


def test_checker_reads_from_package_import_submodule_as_the_submodule():
    source = "from align import trainers\nfrom align.runtime import checkpoints\n"
    imports = imports_in("data_prep/fake.py", source, collect(tree_sources())[1])
    assert [i.target for i in imports] == ["align.trainers", "align.runtime.checkpoints"]
    problems = layer_violations(with_tree({"data_prep/fake_reach.py": source}))
    assert [p.split(": ")[0] for p in problems if "fake_reach" in p] == ["data_prep/fake_reach.py:1",
                                                                         "data_prep/fake_reach.py:2"]


def test_checker_reports_a_dynamic_import_by_name():
    source = "import importlib\n\ndef load(name):\n    return importlib.import_module(f'align.trainers.{name}')\n"
    problems = layer_violations(with_tree({"align/runtime/fake_dynamic.py": source}))
    (problem,) = [p for p in problems if "fake_dynamic" in p]
    assert problem.startswith("align/runtime/fake_dynamic.py:4:") and "(dynamic import)" in problem


def test_checker_reports_a_folder_in_no_layer():
    problems = layer_violations(with_tree({"align/utils/__init__.py": "", "align/utils/fake.py": "x = 1\n"}))
    assert any(p.startswith("align/utils/fake.py: in no layer") for p in problems), problems


def test_checker_reports_an_import_circle_hidden_in_a_function():
    cycles = import_cycles(with_tree({
        "data_prep/fake_a.py": "def f():\n    from data_prep import fake_b\n",
        "data_prep/fake_b.py": "from data_prep.fake_a import f\n",
    }))
    (cycle,) = [c for c in cycles if "fake_a" in c]
    assert cycle.startswith("data_prep.fake_a -> data_prep.fake_b -> data_prep.fake_a (")
    assert "data_prep/fake_a.py:2" in cycle and "data_prep/fake_b.py:1" in cycle


def test_checker_reports_a_repeated_module_name():
    paths = [*tree_sources(), "align/evaluation/checkpoints.py"]
    repeated = repeated_stems([p for p in paths if p.startswith("align/")])
    assert "checkpoints: align/evaluation/checkpoints.py, align/runtime/checkpoints.py" in repeated
