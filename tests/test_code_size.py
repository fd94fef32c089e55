"""The house rules of docs/ARCHITECTURE.md that a reader can check mechanically."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "napari_medvit"
PARSER_BUILDERS = {"build_parser"}  # argparse builders list every option: exempt from the function limit


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_600_lines_and_no_function_over_80() -> None:
    long_modules, long_functions = [], []
    for path in _modules():
        text = path.read_text()
        if len(text.splitlines()) > 600:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in PARSER_BUILDERS:
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 80:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules and not long_functions, long_modules + long_functions
    predictor = PACKAGE / "inference" / "predictor.py"
    assert len(predictor.read_text().splitlines()) < 300  # a thin facade over the runners


def test_no_code_outside_the_registry_switches_on_a_family_name() -> None:
    """Family knowledge lives in the family's adapter; task code asks the adapter."""
    pattern = re.compile(r"\.family\s*[!=]=|family\s*==\s*['\"]|type\((model|net|module)\b[^)]*\)\.__name__\s*=="
                         r"|getattr\([^)]*['\"]family['\"]")
    allowed = {PACKAGE / "models" / "__init__.py"}  # a checkpoint of another family is refused there
    found = [f"{p.relative_to(PACKAGE)}:{n}: {line.strip()}" for p in _modules() if p not in allowed
             for n, line in enumerate(p.read_text().splitlines(), start=1) if pattern.search(line)]
    assert not found, found
