"""The billing core must not touch binary floating point (CONTRACT section 1)."""

import ast
from pathlib import Path

import pytest

INTEGER_MATH = {"gcd", "lcm", "isqrt", "comb", "perm", "factorial"}
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
        # math works in floats, except its exact integer functions.
        if isinstance(node, ast.ImportFrom) and node.module == "math":
            floaty = [alias.name for alias in node.names if alias.name not in INTEGER_MATH]
            if floaty:
                problems.append(f"line {node.lineno}: math works in floats ({', '.join(floaty)})")
        if isinstance(node, ast.Import) and any(alias.name == "math" for alias in node.names):
            problems.append(f"line {node.lineno}: import math (import its integer functions by name)")
    assert not problems, problems
