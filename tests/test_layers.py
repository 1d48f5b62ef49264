"""The package's shape: every module imports, no import cycle, and no lower layer imports a higher
one.

The layer order is written once, here. A module may import its own package and the layers
below its own; two packages of one layer stay independent of each other. Imports inside
functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import memaudit

# Lowest first. The commands (cli) and the Python API (api) sit on the capabilities, which sit
# on scoring and models, which sit on io; cli and api are independent front ends.
LAYERS = (
    ("errors", "version"),
    ("io", "registry"),
    ("metrics",),
    ("models", "report"),
    ("scoring",),
    ("attacks",),
    ("index",),
    ("lab",),
    ("mia",),
    ("unlearn", "probes", "diffusion", "editing"),
    ("cli", "api", "__main__"),
)
LAYER_OF = {top: i for i, names in enumerate(LAYERS) for top in names}
ROOT = Path(memaudit.__file__).parent


def all_modules() -> list[str]:
    names = ["memaudit"]
    names += [
        m.name
        for m in pkgutil.walk_packages(memaudit.__path__, "memaudit.")
        if not m.name.endswith("__main__")
    ]
    return names


def module_file(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    return ROOT / rel / "__init__.py" if (ROOT / rel).is_dir() else (ROOT / rel).with_suffix(".py")


def imports_of(name: str) -> set[str]:
    """The memaudit modules ``name`` imports, resolved to modules where a name is a submodule."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("memaudit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("memaudit"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if module_file(sub).exists() else target)
    return found - {name}


def top(name: str) -> str:
    return name.split(".")[1] if "." in name else "memaudit"


def test_every_module_imports():
    for name in all_modules():
        importlib.import_module(name)


def test_every_top_level_name_has_a_layer():
    tops = {top(n) for n in all_modules()} - {"memaudit"}
    assert tops <= set(LAYER_OF), (
        f"modules without a layer (add them to LAYERS): {sorted(tops - set(LAYER_OF))}"
    )


def test_no_lower_layer_imports_a_higher_one():
    wrong = []
    for name in all_modules():
        here = top(name)
        if here == "memaudit":
            continue
        for dep in imports_of(name):
            there = top(dep)
            if there == here or there == "memaudit":
                continue
            if LAYER_OF[there] >= LAYER_OF[here]:
                wrong.append(
                    f"{name} imports {dep} (layer {LAYERS[LAYER_OF[there]]} is not below "
                    f"{LAYERS[LAYER_OF[here]]})"
                )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = {name: imports_of(name) for name in all_modules()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path + [node, dep]
            if dep not in state:
                cycle = visit(dep, path + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for name in graph:
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :])


def test_top_level_reads_as_the_capability_list():
    modules = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__init__")
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert len(modules) <= 10, modules
    for a in (
        modules + packages
    ):  # no extract.py beside extraction.py, no train.py beside trainer.py
        clash = [b for b in modules + packages if b != a and b.startswith(a)]
        assert not clash, f"{a} and {clash} differ only by a suffix"
    for p in packages:
        doc = ast.get_docstring(ast.parse((ROOT / p / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, (
            f"memaudit/{p}/__init__.py needs a one-line docstring of what it owns"
        )


def test_the_command_line_starts_without_torch():
    """Config classes live in light ``config`` modules, so ``memaudit --help`` never imports
    torch.
    """
    import subprocess
    import sys

    code = (
        "import sys, memaudit.cli.app; print(sorted(m for m in ('torch', 'transformers', "
        "'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", f"memaudit.cli.app imports {out} at startup"
