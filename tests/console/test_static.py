"""The console's files are self-contained and escape what they show (no browser needed).

- no page or script refers to another origin (a console in an X-ray room has no internet, and
  the Content-Security-Policy would refuse it anyway);
- no script turns data into markup (innerHTML, outerHTML, insertAdjacentHTML, document.write):
  worklist text is the RIS's, and must stay text;
- every page's scripts and styles are files the package ships.
"""

from __future__ import annotations

import re
from importlib import resources

STATIC = resources.files("gateway.console") / "static"
FILES = {p.name: p.read_text(encoding="utf-8") for p in STATIC.iterdir() if p.name.endswith((".html", ".js", ".css"))}


def test_nothing_refers_to_another_origin() -> None:
    assert {"index.html", "tech.html", "admin.html", "console.css", "common.js", "tech.js"} <= set(FILES)
    for name, text in FILES.items():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text, name


def test_scripts_never_build_markup_from_data() -> None:
    for name, text in FILES.items():
        if name.endswith(".js"):
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, (name, sink)


def test_pages_load_only_shipped_files() -> None:
    for name, text in FILES.items():
        if name.endswith(".html"):
            refs = re.findall(r'(?:src|href)="([^"]+)"', text)
            assert refs, name
            for ref in refs:
                assert ref in FILES, (name, ref)
            assert "<script>" not in text and "style=" not in text, name  # CSP: no inline code or style
