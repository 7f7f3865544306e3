"""Verified imports of ``module:attribute`` references read from specs.

A spec may name code to run (a reward function, an env entry point). Before such a module is
imported, its source file is located without executing anything and its SHA-256 compared with
the hash recorded when the spec was made; a mismatch refuses the import. This is what lets a
bundle name code by reference without trusting whatever happens to be installed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import inspect
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any

from rlops_plugin.bundle.hashing import sha256_file
from rlops_plugin.errors import ConfigError, IntegrityError

_REF = re.compile(r"^(?P<module>[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*):(?P<attr>[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*)$")


def split_reference(ref: str) -> tuple[str, str]:
    """Split ``"pkg.module:func"`` into module and attribute; refuse anything else."""
    match = _REF.match(ref or "")
    if not match:
        raise ConfigError(
            f"reference {ref!r} is not of the form 'package.module:function' "
            "(letters, digits and underscores only)"
        )
    return match["module"], match["attr"]


def module_source_path(module_name: str) -> Path:
    """Locate a module's source file without importing it (or its parents)."""
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None):
        return Path(loaded.__file__)
    parts = module_name.split(".")
    search: list[str] | None = None
    spec = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        parent = sys.modules.get(name)
        if parent is not None and getattr(parent, "__spec__", None) is not None:
            spec = parent.__spec__
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            raise ConfigError(
                f"module {module_name!r} is not installed (could not find {name!r} on sys.path)"
            )
        search = list(spec.submodule_search_locations or [])
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        raise ConfigError(f"module {module_name!r} has no source file to verify")
    return Path(spec.origin)


def module_source_sha256(module_name: str) -> str:
    """SHA-256 of the source file of ``module_name``, found without importing it."""
    return sha256_file(module_source_path(module_name))


def object_module(obj: Any) -> str:
    """The importable module that defines ``obj``; refuses lambdas, locals and ``__main__``."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if not module or module == "__main__":
        raise ConfigError(
            f"{qualname or obj!r} is defined in __main__; put it in an importable module so "
            "the bundle can name it as 'module:function'"
        )
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(f"{qualname} is a local or lambda; define it at module level")
    return module


def reference_of(obj: Any) -> str:
    """``module:qualname`` of a module-level function or class."""
    return f"{object_module(obj)}:{obj.__qualname__}"


def import_closure(module_name: str) -> dict[str, Path]:
    """The user's modules ``module_name`` imports, directly or through each other: ``{module name: source}``.

    Found statically (the import statements in the sources; nothing is executed), so a reward's helper
    modules can be hashed before any of them runs. "The user's" means the modules of the same top-level
    package, with each package's ``__init__.py`` on the way; for a top-level module outside site-packages
    and the standard library, the top-level modules beside it. ``module_name`` itself is left out.
    """
    root = module_name.split(".")[0]
    own_dir = _plain_directory(module_source_path(module_name)) if "." not in module_name else None
    found: dict[str, Path] = {}
    todo = [module_name]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            path = module_source_path(name)
        except ConfigError:
            continue  # "from pkg import name" where name is an attribute, not a module
        if path.suffix != ".py":
            continue
        found[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages' __init__.py
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        for imported in _imports(path, package):
            top = imported.split(".")[0]
            if top == root or (own_dir is not None and _beside(top, own_dir)):
                todo.append(imported)
    found.pop(module_name, None)
    return dict(sorted(found.items()))


def _imports(path: Path, package: str) -> list[str]:
    """Module names a source file imports (absolute; relative ones resolved against ``package``)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError) as exc:
        raise IntegrityError(f"{path}: cannot be parsed to find its imports ({exc})") from None
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module:
                names.append(module)
            names.extend(f"{module}.{alias.name}" if module else alias.name for alias in node.names
                         if alias.name != "*")
    return names


def _plain_directory(path: Path) -> Path | None:
    """The directory of a top-level module when it is the user's own (not site-packages or the stdlib)."""
    directory = path.resolve().parent
    installed = {Path(p).resolve() for key in ("purelib", "platlib", "stdlib", "platstdlib")
                 if (p := sysconfig.get_paths().get(key))}
    return None if directory in installed or directory.name in ("site-packages", "dist-packages") else directory


def _beside(module: str, directory: Path) -> bool:
    """True when top-level ``module`` is a source file (or package) in ``directory``."""
    try:
        return module_source_path(module).resolve().parent in (directory, directory / module)
    except ConfigError:
        return False


def closure_hashes(module_name: str) -> dict[str, str]:
    """``{module name: sha256 of its source}`` over :func:`import_closure`."""
    return {name: sha256_file(path) for name, path in import_closure(module_name).items()}


def verify_closure(ref: str, expected: dict[str, str]) -> None:
    """Refuse ``ref`` when a module of its recorded import closure is missing or no longer hashes the same."""
    for name, digest in expected.items():
        try:
            path = module_source_path(name)
        except ConfigError:
            raise IntegrityError(f"{ref}: helper module {name!r} it imported when the spec was made is not "
                                 "installed; refusing to import it") from None
        actual = sha256_file(path)
        if actual != digest:
            raise IntegrityError(f"{ref}: helper module {name!r} ({path}) has sha256 {actual[:12]}..., the spec "
                                 f"expects {digest[:12]}...; refusing to import it. Install the version the bundle "
                                 "was made with, or re-create the spec from the current code.")


def load_verified(ref: str, expected_sha256: str, closure: dict[str, str] | None = None) -> Any:
    """Import ``ref`` only if its module source hashes to ``expected_sha256`` (and its ``closure`` still matches)."""
    module_name, attr = split_reference(ref)
    if closure:
        verify_closure(ref, closure)
    path = module_source_path(module_name)
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise IntegrityError(
            f"{ref}: source of module {module_name!r} ({path}) has sha256 {actual[:12]}..., "
            f"the spec expects {expected_sha256[:12]}...; refusing to import it. Install the "
            "version the bundle was made with, or re-create the spec from the current code."
        )
    return resolve_attribute(importlib.import_module(module_name), attr, ref)


def resolve_attribute(module: Any, attr: str, ref: str) -> Any:
    """Walk a dotted attribute path inside an imported module."""
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{ref}: module has no attribute {attr!r}") from None
    return obj


def source_file_of(obj: Any) -> Path:
    """Source file of a function or class, for hashing and audit copies."""
    try:
        return Path(inspect.getsourcefile(obj) or "")
    except TypeError as exc:
        raise ConfigError(f"cannot find the source file of {obj!r}: {exc}") from exc
