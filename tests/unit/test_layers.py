"""The layers import downwards only: common/ (pure helpers) <- directory/ <- web/, proxy/.

Checked on the source, so a new ``from proxy... import`` in the directory layer (the 20
imports this once had) fails here rather than growing back unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: package -> top-level packages it must not import
FORBIDDEN = {
    "common": {"proxy", "directory", "bench", "web"},
    "directory": {"proxy", "bench", "web"},
    "web": {"proxy", "bench"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str) -> None:
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        bad = imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {', '.join(sorted(bad))}")
    assert offenders == []


def test_the_check_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\nfrom proxy.config import X\nfrom . import y\n")
    assert imported_packages(sample) == {"os", "proxy"}
