"""The declared dependency floors are the tested ones: pyproject.toml's ``>=`` versions are
exactly the ``==`` pins of constraints-floors.txt, which ``make test-floors`` installs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def floors(requirements: list[str]) -> dict[str, str]:
    """name -> the version of its single ``>=`` specifier."""
    out = {}
    for line in requirements:
        req = Requirement(line)
        (spec,) = req.specifier  # one specifier each: the floor
        assert spec.operator == ">=", f"{line}: a floor is written as >=VERSION"
        out[canonicalize_name(req.name)] = spec.version
    return out


def pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line (comments and blanks skipped)."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[canonicalize_name(name)] = version.strip()
    return out


def test_declared_floors_are_the_pinned_floors_that_make_test_floors_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = floors(project["dependencies"])
    pytest_floor = floors([r for r in project["optional-dependencies"]["test"] if "pytest" in r])
    assert pins(ROOT / "constraints-floors.txt") == {**declared, **pytest_floor}
