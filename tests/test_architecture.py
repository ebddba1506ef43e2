"""The layers hold: the core (``driftline/``) imports none of the services,
the registry imports neither the monitor nor the worker, only the demo
composes all three (the contracts are ``[tool.importlinter]`` in
pyproject.toml; import-linter checks them).

import-linter reads the source tree of the package it checks, but the
services' folders sit beside ``driftline/`` and are mapped into it only at
install time; so the check runs on a copy laid out as installed
(``driftline/streams``, ``driftline/retrain``, ``driftline/registry``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("streams", "retrain", "registry")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _installed_layout(into: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = into / "driftline"
    shutil.copytree(ROOT / "driftline", package, ignore=ignore)
    for service in SERVICES:
        shutil.copytree(ROOT / service, package / service, ignore=ignore)
    return package


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy, not the editable install
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold(tmp_path):
    _installed_layout(tmp_path)
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout, result.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path):
    # the check can fail: the core importing the registry is caught
    package = _installed_layout(tmp_path)
    (package / "topics.py").write_text((package / "topics.py").read_text(encoding="utf-8")
                                       + "\nfrom driftline.registry import open_registry  # noqa\n",
                                       encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "driftline.topics -> driftline.registry" in result.stdout, result.stdout


def test_every_core_module_is_under_the_core_contract():
    # a new module in driftline/ must be listed, or the contract would not see it
    core = next(c for c in _contracts() if c["name"].startswith("the core imports no service"))
    services = {"demo", *SERVICES}
    present = {f"driftline.{p.stem}" for p in (ROOT / "driftline").glob("*.py")
               if p.stem not in ("__init__", "__main__")}
    present |= {f"driftline.{p.name}" for p in (ROOT / "driftline").iterdir()
                if p.is_dir() and (p / "__init__.py").exists() and p.name not in services}
    assert present == set(core["source_modules"])
