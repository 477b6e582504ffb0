"""OPERATIONS.md and the CLI help stay true to the code."""
import os
import subprocess
import sys

from app.tools import docs
from tests.conftest import ROOT


def test_operations_md_is_generated_from_the_registry():
    on_disk = (ROOT / "OPERATIONS.md").read_text(encoding="utf-8")
    assert on_disk == docs.render(), "OPERATIONS.md is stale: run `python -m app docs --write`"


def test_every_hand_written_section_is_in_the_document():
    text = docs.render()
    for section in sorted(os.listdir(docs.SECTIONS)):
        with open(os.path.join(docs.SECTIONS, section), encoding="utf-8") as handle:
            first_line = handle.readline().strip()
        assert first_line and first_line in text, "%s is not part of OPERATIONS.md (app/tools/docs.py)" % section


def test_every_op_is_documented_with_its_arguments():
    text = docs.render()
    from app.engine.opspec import REGISTRY
    for name, decl in REGISTRY.items():
        section = text.split("### `%s`" % name, 1)[1].split("### ", 1)[0]
        for arg in decl.args:
            assert "| `%s` |" % arg in section


def test_cli_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    for command in ("serve", "check", "docs"):
        assert command in out
