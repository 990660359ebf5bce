"""The library's layout: sub-packages by role, imports only downward, no recipe named.

The roles, lowest first: ``utils`` < ``models`` < ``gmp`` < ``data`` < ``training`` < ``deploy``
< ``runner`` < ``fixtures``. Every import of every module under ``lobes/`` (at the top or inside
a function) goes to its own sub-package or to one listed before it; no code under ``lobes/``
names the recipes' folder, and no module reads a private name of another.
"""

import ast
from pathlib import Path

LOBES = Path(__file__).resolve().parents[1] / "lobes"
LAYERS = ("utils", "models", "gmp", "data", "training", "deploy", "runner", "fixtures")


def modules():
    return sorted(path for path in LOBES.rglob("*.py"))


def imported(tree):
    """``(line, module, names)`` of every import statement of a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, tuple(alias.name for alias in node.names)


def layer_of(module_name):
    parts = module_name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "lobes" else None


def test_every_module_is_in_a_role_package():
    loose = [path.name for path in LOBES.glob("*.py") if path.name != "__init__.py"]
    assert loose == []
    assert {path.name for path in LOBES.iterdir() if path.is_dir()
            and (path / "__init__.py").exists()} == set(LAYERS)


def test_imports_run_only_downward():
    upward = []
    for path in modules():
        own = path.relative_to(LOBES).parts[0]
        if own not in LAYERS:
            continue
        for line, module, names in imported(ast.parse(path.read_text())):
            targets = [module] if module != "lobes" else [f"lobes.{name}" for name in names]
            for target in targets:
                layer = layer_of(target)
                if layer and LAYERS.index(layer) > LAYERS.index(own):
                    upward.append(f"{path.relative_to(LOBES)}:{line} imports {target}")
    assert upward == []


def code_strings(tree):
    """The string constants of a module that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_library_names_no_recipe():
    named = []
    for path in modules():
        for node in code_strings(ast.parse(path.read_text())):
            if "recipes/" in node.value:
                named.append(f"{path.relative_to(LOBES)}:{node.lineno} {node.value!r}")
    assert named == []


def private_reads(source):
    """``(line, name)`` of each private name of a ``lobes`` module that ``source`` reads.

    >>> private_reads("from lobes.runner import hparams as hp\\nhp._EXTENDS.sub('', '')\\n")
    [(2, 'hp._EXTENDS')]
    >>> private_reads("from lobes.utils.io import _umask\\nimport torch\\ntorch._C\\n")
    [(1, 'lobes.utils.io._umask')]
    """
    tree = ast.parse(source)
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lobes"):
            aliases |= {alias.asname or alias.name for alias in node.names}
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if alias.name.startswith("_")]
        elif isinstance(node, ast.Import):
            aliases |= {alias.asname for alias in node.names
                        if alias.name.startswith("lobes") and alias.asname}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return sorted(found)


def test_no_module_reads_a_private_name_of_another():
    private = [f"{path.relative_to(LOBES)}:{line} reads {name}" for path in modules()
               for line, name in private_reads(path.read_text())]
    assert private == []
