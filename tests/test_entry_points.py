"""Entry points (demo.py, train_net.py, tools/*.py) import the package, never each other, and do
not edit sys.path; the shared code they call is importable from dcdc."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([REPO / "demo.py", REPO / "train_net.py", *(REPO / "tools").glob("*.py")])
SCRIPT_NAMES = {p.stem for p in SCRIPTS} | {"tools"}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_imports_no_script_and_leaves_sys_path(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            names = []
        assert not SCRIPT_NAMES & set(names), f"{path.name}:{node.lineno} imports a script {names}"
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            pytest.fail(f"{path.name}:{node.lineno} uses sys.path")

