"""The billing core must not touch binary floating point (CONTRACT section 1)."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "metering" / "core"


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_no_float_literals_or_conversions(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (float, complex)):
            problems.append(f"line {node.lineno}: float literal {node.value!r}")
        is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if is_call and node.func.id == "float":
            problems.append(f"line {node.lineno}: float() call")
        if isinstance(node, ast.ImportFrom) and node.module == "math":
            problems.append(f"line {node.lineno}: math works in floats")
    assert not problems, problems
