"""The package's imports run one way, downward, with no cycle (docs/architecture.md, "Layers").

Every import of every module is read from its source (``ast``), function-level imports included, and
checked against the layer order written below: a module may import its own layer or a lower one,
never a higher one. The module graph must have no cycle, and no module may import another module's
private (underscore) name.
"""
from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "python" / "meshtalk_fast"
NAME = "meshtalk_fast"

# Lowest first. A module belongs to the layer of the longest prefix that names it. Within "apps" the
# training package is split: its data types and objectives sit below the evaluation report (which
# reads clips), and the training loop (trainer, quick start, setup) above it (it evaluates as it goes).
LAYERS = [
    ("base", ["base"]),                        # argument checks, dispatch, temporary files
    ("io", ["io"]),                            # file formats that know nothing of the model
    ("ops", ["ops"]),                          # one file per op: reference + public function
    ("models", ["models"]),                    # the modules, MeshTalk, its model files, incremental steps
    ("backends", ["backends"]),                # one table per backend (torch, triton, cpp)
    ("data", ["data"]),                        # data sets and readers
    ("apps", ["animation", "streaming", "evaluation.metrics", "evaluation.plots",
              "training.config", "training.batches", "training.objectives", "training.state"]),
    ("evaluation", ["evaluation"]),
    ("training", ["training"]),                # trainer, quick start, shared setup
    ("root", [""]),                            # meshtalk_fast/__init__.py: the public API, installs the tables
    ("cli", ["cli"]),                          # argument parsing only; calls the public API and the layers
]
PRIVATE_OK = {f"{NAME}._core"}  # the compiled extension is private to the package, imported by backends/cpp


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([NAME] + parts)


def modules() -> dict:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "kernels" in path.relative_to(PACKAGE).parts:  # Triton kernels: import only triton and torch
            continue
        found[module_name(path)] = path
    return found


def layer_of(module: str) -> int:
    rel = module[len(NAME) + 1:] if module != NAME else ""
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (prefix == "" or rel == prefix or rel.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    assert best is not None, f"module {module} is in no layer of LAYERS"
    return best


def imports(module: str, path: pathlib.Path, known: dict):
    """(line, imported module, names) for every import of the package in ``path``, at any depth."""
    is_pkg = path.name == "__init__.py"
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == NAME or alias.name.startswith(NAME + "."):
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == NAME or target.startswith(NAME + ".")):
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known or f"{target}.{n}" in PRIVATE_OK]
            if submodules:
                for sub in submodules:
                    yield node.lineno, sub, []
                rest = [n for n in names if f"{target}.{n}" not in submodules]
                if rest:
                    yield node.lineno, target, rest
            else:
                yield node.lineno, target, names


def graph():
    known = modules()
    edges = {}
    for module, path in known.items():
        edges[module] = [(line, target, names) for line, target, names in imports(module, path, known)]
    return known, edges


def test_every_import_goes_down_the_layers():
    known, edges = graph()
    bad = []
    for module, targets in edges.items():
        for line, target, _ in targets:
            if target in PRIVATE_OK:
                continue
            assert target in known, f"{module}:{line} imports {target}, which is not a module of the package"
            if layer_of(target) > layer_of(module):
                bad.append(f"{known[module].relative_to(PACKAGE)}:{line}: {module} ({LAYERS[layer_of(module)][0]}) "
                           f"imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not bad, "imports going up the layers:\n" + "\n".join(bad)


def test_no_import_cycle():
    known, edges = graph()
    nexts = {m: sorted({t for _, t, _ in ts if t in known and t != m}) for m, ts in edges.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in nexts[m]:
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(nexts):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_crosses_modules():
    known, edges = graph()
    bad = []
    for module, targets in edges.items():
        for line, target, names in targets:
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            leaf = target.rsplit(".", 1)[-1]
            if leaf.startswith("_") and target not in PRIVATE_OK:
                private.append(leaf)
            if private:
                bad.append(f"{known[module].relative_to(PACKAGE)}:{line}: {module} imports {', '.join(private)} "
                           f"from {target}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_layer_table_names_every_top_level_part():
    """A new top-level module or package must be placed in LAYERS (it is not silently the root's)."""
    named = {prefix.split(".")[0] for _, prefixes in LAYERS for prefix in prefixes if prefix}
    tops = {m.split(".")[1] for m in modules() if m.count(".") >= 1}
    assert tops <= named, f"top-level parts missing from LAYERS: {sorted(tops - named)}"
