"""Benchmark scripts loaded by path, for the tests that check them.

benchmarks/ holds scripts, not a package: each runs as `python benchmarks/X.py` and imports
the scripts beside it by their bare names (`from common import ...`). `load_benchmark` loads
those first, each under its bare name, so the script's own imports find them without
benchmarks/ on sys.path.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def sibling_imports(path: Path) -> list[str]:
    """The scripts of benchmarks/ that `path` imports by their bare names."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [name for name in dict.fromkeys(names) if (BENCHMARKS / f"{name}.py").is_file()]


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as the module `name` (loaded once), after the scripts it imports."""
    path = BENCHMARKS / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != path:
            raise ImportError(f"another module named {name!r} is loaded, not {path}")
        return loaded
    for sibling in sibling_imports(path):
        load_benchmark(sibling)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there, and sibling scripts import it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
