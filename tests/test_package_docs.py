"""Every package's docstring lists its modules, under a ``Modules`` heading, and no module it does not have:
the list a new engineer reads first stays true when a module is added, moved or renamed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

PACKAGES = sorted(
    path.parent
    for root in ("recsys", "flows", "benchmarks")
    for path in (PROJECT_ROOT / root).glob("**/__init__.py")
)
_ENTRY = re.compile(r"^([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*)\s*$")


def listed_modules(package: Path) -> set[str]:
    """The module names of the ``Modules`` section of ``package``'s docstring (``a, b`` lists both)."""
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    lines = docstring.splitlines()
    starts = [
        n for n, line in enumerate(lines[:-1]) if line.startswith("Modules") and set(lines[n + 1]) == {"-"}
    ]
    names: set[str] = set()
    for start in starts:
        for line in lines[start + 2 :]:
            if line and not line.startswith(" ") and not _ENTRY.match(line):
                break
            match = _ENTRY.match(line)
            if match:
                names.update(match.group(1).split(", "))
    return names


def actual_modules(package: Path) -> set[str]:
    """The modules and subpackages ``package`` holds."""
    files = {path.stem for path in package.glob("*.py") if path.name != "__init__.py"}
    folders = {path.parent.name for path in package.glob("*/__init__.py")}
    return files | folders


@pytest.mark.parametrize("package", PACKAGES, ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_the_package_docstring_lists_exactly_its_modules(package: Path) -> None:
    listed, actual = listed_modules(package), actual_modules(package)
    assert listed, f"{package / '__init__.py'}: no 'Modules' section in the docstring"
    assert listed - actual == set(), f"{package / '__init__.py'} lists modules it does not have"
    assert actual - listed == set(), f"{package / '__init__.py'} does not list these modules"


def test_the_reader_finds_a_missing_and_an_extra_module(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""Doc.\n\nModules\n-------\na, b\n    Two.\ngone\n    Old.\n"""\n')
    for name in ("a", "b", "new"):
        (package / f"{name}.py").write_text("")
    assert listed_modules(package) == {"a", "b", "gone"}
    assert actual_modules(package) == {"a", "b", "new"}
