"""The code each stage script runs, one small file per script: fingerprints/<script>.txt lists the script and
every library file it imports, each with its MD5, in md5sum's format (`md5sum -c fingerprints/train.txt`
checks it). That file is the stage's one code dep in dvc.yaml, so a change to any module a stage runs re-runs
the stage, and a change elsewhere does not.

Why not list the modules in dvc.yaml, as before: DVC re-reads and rewrites dvc.lock (a pure-Python round trip)
after every stage, and the ~550 code deps were half of it; that was most of DVC's 1 s per stage. The list is
found by reading the code, not by hand: the import statements of the script, then of each module they name,
anywhere in the file (lazy imports in functions included). tests/pipeline/test_stage_deps.py checks it against
the modules each stage of a real pipeline really loaded. Imports no torch: it runs in a fraction of a second.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "mnist_xai"
SOURCE = Path("src")
SCRIPTS = Path("stages")
OUTPUT = Path("fingerprints")
LAUNCHER = "mnist_xai.server"
"""It starts a stage (in a fork of itself) but computes nothing in it: a change to it re-runs nothing."""


def module_file(name: str) -> Path | None:
    """The file of module `name` (a package's __init__.py), or None when it is not a module of the package."""
    base = SOURCE.joinpath(*name.split("."))
    for file in (base / "__init__.py", base.with_suffix(".py")):
        if file.is_file():
            return file
    return None


def _parse(file: Path) -> ast.Module:
    """Each file parsed once, though every stage script's closure reaches it (keyed by its current contents)."""
    return _parse_text(file.read_text(), str(file))


@functools.cache
def _parse_text(text: str, name: str) -> ast.Module:
    return ast.parse(text, name)


def _lazy_attributes(package: str) -> tuple[set[str], set[str]]:
    """A package's PEP 562 __getattr__: the names its __init__ binds itself, and the modules __getattr__ imports
    on first use of any other name."""
    file = module_file(package)
    if file is None or file.name != "__init__.py":
        return set(), set()
    bound, lazy = set(), set()
    for node in _parse(file).body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    lazy.update(f"{inner.module}.{alias.name}" if module_file(f"{inner.module}.{alias.name}")
                                else inner.module for alias in inner.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
    return bound, lazy


def _imported_names(file: Path) -> set[str]:
    """Every module an import statement of `file` names, at the top or in a function (a stage script imports
    its heavy modules in main()); but a package's __getattr__ runs only for whoever asks for its attribute."""
    tree = _parse(file)
    on_demand = {id(node) for top in tree.body if isinstance(top, ast.FunctionDef) and top.name == "__getattr__"
                 for node in ast.walk(top)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in on_demand:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ValueError(f"{file}: relative imports are not followed; import from {PACKAGE}. instead")
            names.add(node.module)
            bound, lazy = _lazy_attributes(node.module)
            for alias in node.names:  # `from package import module`, or a package's lazy attribute
                names.add(f"{node.module}.{alias.name}")
                if alias.name not in bound and not module_file(f"{node.module}.{alias.name}"):
                    names.update(lazy)
    return names


def imported_modules(file: Path) -> set[str]:
    """The package's modules that `file` imports, with the packages above them (importing a.b runs a too)."""
    modules = set()
    for name in _imported_names(file):
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            continue
        parts = name.split(".")
        modules.update(prefix for i in range(1, len(parts) + 1)
                       if module_file(prefix := ".".join(parts[:i])) is not None)
    return modules - {LAUNCHER}


def loaded_by_name() -> dict[str, set[str]]:
    """Modules imported from a name in data, which no import statement shows: attribution.core runs each
    method's implementation, named "module:function" in the registry and imported on first use."""
    from mnist_xai.attribution.registry import REGISTRY

    implementations = {method.implementation.split(":")[0] for method in REGISTRY.values()}
    return {"mnist_xai.attribution.core": {f"mnist_xai.attribution.{module}" for module in implementations}}


def _data_files(module: Path) -> set[Path]:
    """Files the module names beside it, such as its page templates ("report.html.j2" in report/builder.py)."""
    names = {node.value for node in ast.walk(_parse(module))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/" not in node.value
             and node.value.endswith((".j2", ".html", ".css", ".js", ".json"))}
    return {module.parent / name for name in names if (module.parent / name).is_file()}


def code_files(script: Path) -> list[Path]:
    """The script and every library file it runs, sorted."""
    extra = loaded_by_name()
    seen: set[str] = set()
    todo = imported_modules(script)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= (imported_modules(module_file(name)) | extra.get(name, set())) - seen
    files = {script}
    for name in seen:
        file = module_file(name)
        files |= {file} | _data_files(file)
    return sorted(files)


def fingerprint(script: Path) -> str:
    """md5sum's format: "<md5>  <path>" per line."""
    return "".join(f"{hashlib.md5(file.read_bytes()).hexdigest()}  {file.as_posix()}\n"
                   for file in code_files(script))


def stage_scripts() -> list[Path]:
    return sorted(f for f in SCRIPTS.glob("*.py") if f.stem != "fingerprints")
