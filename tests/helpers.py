"""Shared by the tests: load a script of the repository (tools/*.py, train_net.py) as a module."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path):
    """Import ``REPO/relative_path`` (not a package module) and return it."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
