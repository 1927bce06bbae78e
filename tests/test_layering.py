"""The layers of the pipeline import downwards only, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import dslrec

PACKAGE = Path(dslrec.__file__).parent

# lowest first; a module may import its own layer and those below
LAYERS = [
    {"dslrec.errors", "dslrec.fileio", "dslrec.progress", "dslrec.encoding", "dslrec.memory",
     "dslrec.distributed"},
    {"dslrec.data"},
    {"dslrec.models", "dslrec.sparse", "dslrec.evaluate"},
    {"dslrec.settings", "dslrec.rundir"},
    {"dslrec.export"},
    {"dslrec.training"},
    {"dslrec.experiments"},
    {"dslrec.cli", "dslrec.__main__", "dslrec.demo", "dslrec.data.commands", "dslrec.training.commands", "dslrec.export.commands",
     "dslrec.experiments.commands"},
]
# The package root is the public facade: it may name anything (lazily), and what others take from it
# is only its version string.
FACADE = "dslrec"


def layer_of(module: str) -> int:
    """The layer of the most specific entry that names the module or a package above it."""
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_len:
                best, best_len = i, len(name)
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """dslrec modules a file imports anywhere in it (functions included)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from dslrec import rundir` names the module dslrec.rundir
                sub = f"{base}.{alias.name}"
                as_file = PACKAGE.parent / Path(*sub.split("."))
                out.add(sub if as_file.with_suffix(".py").exists() or as_file.is_dir() else base)
    return {m for m in out if m == "dslrec" or m.startswith("dslrec.")}


def test_lower_layers_never_import_higher_ones():
    wrong = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    for path in files:
        module = module_name(path)
        if module == FACADE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target in sorted(imported(tree, module, path.name == "__init__.py")):
            if target != FACADE and layer_of(target) > layer_of(module):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from dslrec.training.run import train\n    from dslrec import rundir\n")
    assert imported(tree, "dslrec.export.cost", False) == {"dslrec.training.run", "dslrec.rundir"}
    assert layer_of("dslrec.training.run") > layer_of("dslrec.export.cost")
