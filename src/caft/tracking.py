"""Which package modules a rule's script runs, from its imports: the code a rule's outputs depend on.

Snakemake reruns a job when its script changes, but not when a module the script imports changes. The
rules therefore list those modules as inputs, computed here from the script's ``caft`` imports and,
recursively, theirs (imports inside functions included, since they run too), so the list cannot drift
from the code. Only the standard library is used: the workflow calls this while it is parsed.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "caft"


@lru_cache(maxsize=None)
def _parsed(source: Path, version: tuple[int, int]) -> ast.Module:
    """A file's syntax tree, parsed once per version: the workflow asks for the same ~60 modules for each
    of its ~50 rules, and parsing them again every time cost seconds of every Snakemake start."""
    return ast.parse(source.read_text(encoding="utf-8"), filename=str(source))


def parsed(source: Path) -> ast.Module:
    """The syntax tree of `source` (cached until the file changes; callers must not modify it)."""
    return _parsed(source, _version(source))


def _version(source: Path) -> tuple[int, int]:
    """What changes when a file is edited: its modification time and size."""
    stat = source.stat()
    return stat.st_mtime_ns, stat.st_size


def clear_cache() -> None:
    """Forget every parsed file (benchmarks/workflow_overhead.py times a parse without the cache)."""
    _parsed.cache_clear()
    _imported_modules.cache_clear()


def imported_modules(source: Path) -> set[str]:
    """Dotted names of the ``caft`` modules a Python file imports (``from caft.x import y`` may also name
    a module ``caft.x.y``)."""
    return set(_imported_modules(source, _version(source)))


@lru_cache(maxsize=None)
def _imported_modules(source: Path, version: tuple[int, int]) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(parsed(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == PACKAGE:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return frozenset(found)


def module_file(name: str, src: Path) -> Path | None:
    """The file of a dotted module name under `src` (a package's ``__init__.py``), or None."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _import_table(tree: ast.Module) -> dict[str, str]:
    """Top-level ``caft`` imports of a module: bound name -> the module it comes from."""
    table = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith(PACKAGE):
            table |= {(alias.asname or alias.name): node.module for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    table[alias.asname or alias.name.split(".")[0]] = alias.name
    return table


def stage_function_modules(stage_file: Path, function: str) -> set[str]:
    """The ``caft`` modules one stage function of a stage module uses: the names its body (and the
    module's private helpers and constants it reaches) takes from imports. A rule then depends only on
    the library code of its own stage, not on every import of the stage module it shares with other rules."""
    tree = parsed(stage_file)
    imports = _import_table(tree)
    local = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            local[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            local |= {target.id: node for target in targets if isinstance(target, ast.Name)}
    if function not in local:
        raise ValueError(f"{stage_file}: no function {function!r}")
    modules: set[str] = set()
    todo, done = [function], set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        for node in ast.walk(local[name]):
            if isinstance(node, ast.Name):
                if node.id in imports:
                    modules.add(imports[node.id])
                elif node.id in local:
                    todo.append(node.id)
    return modules


def _script_modules(script: Path, src: Path) -> set[str]:
    """A script's ``caft`` imports, with each imported stage function narrowed to what it uses."""
    modules = set()
    for node in ast.walk(parsed(script)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{PACKAGE}.stages."):
            stage_file = module_file(node.module, src)
            modules.add(node.module + ".__stage__")
            for alias in node.names:
                modules |= stage_function_modules(stage_file, alias.name)
    others = imported_modules(script) - {m for m in imported_modules(script) if m.startswith(f"{PACKAGE}.stages.")}
    return modules | others


def caft_modules_of(script: Path, src: Path) -> set[Path]:
    """Every package file `script` runs: its ``caft`` imports, their parent packages, transitively (a
    stage module itself, but of its imports only those of the stage functions the script calls)."""
    files: set[Path] = set()
    pending = _script_modules(script, src)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.endswith(".__stage__"):  # the stage module's own file, without following its imports
            name = name.removesuffix(".__stage__")
            files.add(module_file(name, src))
            pending |= {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))} - seen
            continue
        parts = name.split(".")
        pending |= {".".join(parts[:i]) for i in range(1, len(parts))} - seen
        path = module_file(name, src)
        if path is not None:
            files.add(path)
            files |= package_data_of(path)
            pending |= imported_modules(path) - seen
    return files


def package_data_of(module: Path) -> set[Path]:
    """The data files a module reads from its package folder, as its top-level ``PACKAGE_DATA`` tuple of
    globs names them (templates, tables): they are code or input of what the module computes, so editing
    one must rerun the rules that use the module."""
    for node in parsed(module).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PACKAGE_DATA" for t in node.targets):
            globs = ast.literal_eval(node.value)
            return {path for pattern in globs for path in module.parent.glob(pattern) if path.is_file()}
    return set()
