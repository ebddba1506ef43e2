"""The services install inside ``driftline``: their folder names cannot collide."""

from __future__ import annotations

import json
import subprocess
import sys


def test_top_level_service_names_are_not_driftlines(tmp_path):
    # a user's own registry.py, or PyPI's `registry`, must be what `import registry` finds
    (tmp_path / "registry.py").write_text("OWNER = 'the user'\n", encoding="utf-8")
    probe = ("import importlib.util, json, registry\n"
             "print(json.dumps({'registry': registry.OWNER,"
             " 'streams': importlib.util.find_spec('streams') is not None,"
             " 'retrain': importlib.util.find_spec('retrain') is not None,"
             " 'ours': [importlib.util.find_spec(f'driftline.{n}').origin"
             " for n in ('streams', 'retrain', 'registry')]}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         check=True, timeout=60)
    found = json.loads(out.stdout)
    assert found["registry"] == "the user"
    assert found["streams"] is False and found["retrain"] is False
    assert all(origin.endswith("__init__.py") for origin in found["ours"])


def test_the_services_run_as_driftline_modules(tmp_path):
    for package in ("streams", "retrain", "registry"):
        out = subprocess.run([sys.executable, "-m", f"driftline.{package}", "--help"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "usage:" in out.stdout
