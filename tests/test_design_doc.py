"""Docstrings cite the project's own design document, and every section they cite exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_src_cites_docs_design_md_sections_that_exist():
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", design, re.M))
    cited, outside = set(), []
    for path in sorted((REPO / "src").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if re.search(r"DESIGN(\.md)? §|MODELS\.md", text):
            outside.append(str(path.relative_to(REPO)))
        cited |= set(re.findall(r"docs/design\.md §(\d+)", text))
    assert not outside, f"cite docs/design.md, not a file outside the repository: {outside}"
    assert cited and cited <= sections, f"cited sections missing from docs/design.md: {cited - sections}"
