"""Plugin discovery: a registry's entries are the modules of its package, found on disk.

A registry (models, export formats, runtimes, report sections) is filled by decorators that run
when their module is imported; importing every public module of the package on first use means a
new entry is one new module, with no list of module names to keep beside the registry.
"""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str) -> list[str]:
    """Import every public (not ``_``-prefixed) module of ``package``; returns their names in sorted order."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
