"""The schema-compliance validator, collected by pytest: each check runs against the project's schema."""
import copy
import json
import subprocess
import sys

import pytest

from app.tools import compliance
from tests.conftest import ROOT, load_project_schema

SCHEMA = load_project_schema()


@pytest.mark.parametrize("category,description,check", compliance.CHECKS,
                         ids=["%s: %s" % (c, d) for c, d, _ in compliance.CHECKS])
def test_project_schema_complies(tmp_path, category, description, check):
    env = compliance.ProbeEnv(SCHEMA, str(tmp_path))
    try:
        check(env)
    finally:
        env.close()


def test_validator_reports_an_unimplemented_op(tmp_path):
    broken = copy.deepcopy(SCHEMA)
    broken["ops"]["allowed"].append("shell.exec")
    env = compliance.ProbeEnv(SCHEMA, str(tmp_path))
    env.doc = broken
    try:
        with pytest.raises(compliance.ComplianceFailure, match="shell.exec"):
            compliance._ops_implemented(env)
    finally:
        env.close()


def test_cli_prints_a_summary_per_category_and_fails_on_any_failure(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "app", "validate"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for category in ("ops", "routes", "semantics", "storage"):
        assert "%s" % category in ok.stdout.split("summary:")[1]
    broken = copy.deepcopy(SCHEMA)
    broken["api"]["routes"][0]["pipeline"][0]["op"] = "shell.exec"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    failed = subprocess.run([sys.executable, "-m", "app", "validate", str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode == 1
    assert "FAIL  routes" in failed.stdout and "0 failed" not in failed.stdout.splitlines()[-1]
