"""The house's import picture (DESIGN.md, "Import rules"), checked on the source so that it stays true:
components never import trainers, the CLI, configs or the package face; heads and readers never import
each other; the encoder knows no task; inference reaches no training module; no cycles; no mtl import
hidden in a function (the CLI may defer its heavy imports). Inference is also checked where it counts: in a
fresh interpreter, through `sys.modules`."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mtl"
TRAINING = ("mtl.trainers", "mtl.speed", "mtl.components.optimizers", "mtl.components.lr_schedulers", "mtl.config",
            "mtl.distill", "mtl.cli")
INFERENCE = ("mtl.predictor", "mtl.safe_load", "mtl.serving")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The mtl module an imported name refers to (`mtl.x.y.Name` -> `mtl.x.y`), or None outside mtl."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported mtl module, line, inside a function) for every import statement of `module`."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.startswith("mtl") else None
            if target is not None:
                found.append((target, node.lineno, id(node) in nested))
    return found


def _parents(module: str) -> list[str]:
    """The packages Python runs first when it imports `module` (below the package face)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


GRAPH = {module: imports(module) for module in MODULES}


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


RULES = [  # (importer prefix, forbidden prefixes, why)
    ("mtl.components", ("mtl.trainers", "mtl.cli", "mtl.config", "mtl.predictor", "mtl.serving"),
     "components sit below trainers, configs and inference"),
    ("mtl.components.heads", ("mtl.components.readers",), "heads and readers never import each other"),
    ("mtl.components.readers", ("mtl.components.heads",), "heads and readers never import each other"),
    ("mtl.components.backbones", ("mtl.components.heads", "mtl.components.readers"), "the encoder knows no task"),
    ("mtl.trainers", ("mtl.cli", "mtl.config", "mtl.predictor", "mtl.serving"), "trainers sit below configs"),
    ("mtl.speed", ("mtl.trainers",), "speed kernels sit below the trainers"),
    ("mtl.model", TRAINING + INFERENCE, "the model package is what training and inference share, below both"),
]


def test_no_forbidden_arrows():
    broken = []
    for module, found in GRAPH.items():
        for prefix, forbidden, why in RULES:
            if under(module, prefix):
                broken += [f"{module}:{line} imports {target} ({why})" for target, line, _ in found
                           if any(under(target, f) for f in forbidden)]
        if module != "mtl":
            broken += [f"{module}:{line} imports the package face" for target, line, _ in found if target == "mtl"]
    assert not broken, "\n".join(broken)


def test_no_mtl_import_hidden_in_a_function():
    hidden = [f"{module}:{line} imports {target} inside a function" for module, found in GRAPH.items()
              if module != "mtl.cli" for target, line, inside in found if inside]
    assert not hidden, "\n".join(hidden)


def test_no_import_cycles():
    edges = {module: {target for target, _, _ in found if target != module} for module, found in GRAPH.items()}
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if target == "mtl":  # the face imports everything; the rule above keeps it a leaf of the graph
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else target)
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"
    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("entry", [m for m in MODULES if any(under(m, i) for i in INFERENCE)])
def test_inference_reaches_no_training_module(entry):
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        # importing a module runs its packages' __init__ files first: they count as reached too
        for target in [t for t, _, _ in GRAPH[module]] + _parents(module):
            if target not in seen and target != "mtl":
                seen.add(target)
                todo.append(target)
    reached = sorted(m for m in seen if any(under(m, t) for t in TRAINING))
    assert not reached, f"{entry} reaches training modules: {reached}"


def test_inference_loads_no_training_module_in_a_fresh_interpreter():
    """What a server process really holds: the import graph above misses imports made by code that runs at
    import time (a package face, a plugin table), `sys.modules` does not."""
    code = ("import json, sys\nimport mtl.serving.server, mtl.predictor\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mtl'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "mtl.predictor" in loaded and "mtl.model.decode" in loaded
    training = [m for m in loaded if any(under(m, t) for t in TRAINING)]
    assert not training, f"importing mtl.serving.server and mtl.predictor loaded training modules: {training}"
