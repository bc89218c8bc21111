"""The SDK stands alone: its own pip package, importing nothing of the server."""

import ast
import sys
import tomllib
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"
SERVER_PACKAGES = {"billing", "credits", "ledger", "portal", "config", "django", "rest_framework", "tests"}


def imported_top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_sdk_imports_only_the_standard_library_and_itself():
    allowed = set(sys.stdlib_module_names) | {"cynco_billing", "__future__"}
    for path in (SDK / "src" / "cynco_billing").glob("*.py"):
        names = imported_top_level_names(path)
        assert not names & SERVER_PACKAGES, (path.name, names & SERVER_PACKAGES)
        assert names <= allowed, (path.name, names - allowed)


def test_the_package_metadata_declares_no_dependencies():
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    assert project["name"] == "cynco-billing"
    assert project["dependencies"] == []
