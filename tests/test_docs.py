"""The docs: reference pages generated from the code and up to date, links that lead somewhere."""
import subprocess
import sys

import pytest

from conftest import REPO


def test_the_committed_reference_pages_match_the_cli_and_the_config_schema():
    result = subprocess.run([sys.executable, str(REPO / "scripts/docs/reference.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, (f"regenerate with `.venv/bin/python scripts/docs/reference.py`:\n"
                                    f"{result.stdout}{result.stderr}")


@pytest.mark.parametrize("page", ["config.md", "run-json.md"])
def test_every_config_and_run_json_key_has_a_meaning_in_the_reference(page):
    undocumented = [line.split("|")[1].strip() for line in (REPO / "docs/reference" / page).read_text().splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not undocumented, f"give these schema fields a trailing # comment: {undocumented}"


def test_every_relative_link_in_the_docs_points_at_a_file_that_exists():
    import re

    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = [f"{page.relative_to(REPO)}: {target}"
              for page in pages
              for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, broken
