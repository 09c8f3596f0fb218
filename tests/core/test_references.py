"""No file of the repository cites a document that is not in the repository: a reader must
be able to follow every reference from a clone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: A path ending in .md that is not part of a URL.
MARKDOWN = re.compile(r"(?<![\w/.:%-])((?:[\w.-]+/)*[\w-]+\.md)\b")
#: A document named in capitals and cited by section: ``NOTES §3``.
SECTION = re.compile(r"\b([A-Z][A-Z0-9_-]{2,})(?:\.md)?\s*§")


def _tracked() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _exists(reference: str, source: Path, documents: set[Path]) -> bool:
    """Whether ``reference``, read from ``source``, names one of the ``documents``."""
    if "/" not in reference and any(doc.name == reference for doc in documents):
        return True
    bases = (ROOT, ROOT / "docs", source.parent)
    return any((base / reference).resolve() in documents for base in bases)


def test_every_cited_document_is_in_the_repository():
    files = _tracked()
    documents = {path.resolve() for path in files if path.suffix == ".md"}
    missing = []
    for path in files:
        # Binary and data files cite nothing; this file cites stale names on purpose.
        if path.suffix in {".png", ".json"} or path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in MARKDOWN.finditer(text):
            if not _exists(match.group(1), path, documents):
                missing.append(f"{path.relative_to(ROOT)}: {match.group(1)}")
        for match in SECTION.finditer(text):
            if not _exists(match.group(1) + ".md", path, documents):
                missing.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert missing == []


def test_the_check_sees_a_stale_reference(tmp_path):
    source = tmp_path / "module.py"
    text = "see KEYVAULT-NOTES §3 and docs/DESIGN.md, but not https://x.org/a/README.md"
    found = [m.group(1) for m in MARKDOWN.finditer(text)] + [
        m.group(1) for m in SECTION.finditer(text)
    ]
    assert found == ["docs/DESIGN.md", "KEYVAULT-NOTES"]
    documents = {(ROOT / "docs" / "FORMAT.md").resolve()}
    assert not _exists("docs/DESIGN.md", source, documents)
    assert not _exists("KEYVAULT-NOTES.md", source, documents)
    assert _exists("docs/FORMAT.md", source, documents)
    assert _exists("FORMAT.md", source, documents)
