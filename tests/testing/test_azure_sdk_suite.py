# mypy: allow-untyped-defs, allow-incomplete-defs
"""Microsoft's own tests of azure-keyvault-keys, in live mode, against LocalKeyVault.

``python -m envelope.testing.azure_sdk_tests`` downloads the source package of the installed
azure-keyvault-keys from PyPI and runs its ``tests/`` folder against a local vault and
Managed HSM. Every test passes except those below, each needing something only Azure has;
the list is the README's. A new failure fails this test, and so does a listed test that
starts passing (then the list and the README are out of date).
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

#: Test function -> why it cannot pass against a local vault.
EXPECTED_FAILURES = {
    "test_key_release": "key release needs a token from Azure Attestation",
    "test_imported_key_release": "key release needs a token from Azure Attestation",
    "test_get_key_attestation": "key attestation needs the Managed HSM vendor's certificates",
    "test_rsa_public_exponent": (
        "public exponent 17: cryptography generates RSA keys with exponent 65537 or 3 only"
    ),
}


def _results(report: Path) -> dict[str, tuple[str, int]]:
    """Test id -> (outcome, requests it sent to the vaults)."""
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module, _, cls = (case.get("classname") or "").partition(".")
        test_id = f"{module}.py::{cls + '::' if cls else ''}{case.get('name')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = tag
        requests = 0
        for prop in case.iter("property"):
            if prop.get("name") == "local_keyvault_requests":
                requests = int(prop.get("value") or 0)
        results[test_id] = (outcome, requests)
    return results


def _function(test_id: str) -> str:
    return re.sub(r"\[.*\]$", "", test_id.rsplit("::", 1)[-1])


@pytest.mark.slow
def test_microsoft_live_tests_pass_against_local_keyvault(tmp_path):
    report = tmp_path / "results.xml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "envelope.testing.azure_sdk_tests",
            "-q",
            "-p",
            "no:randomly",
            f"--junitxml={report}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert report.is_file(), f"the suite did not run:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    results = _results(report)
    failed = {
        test_id for test_id, (outcome, _) in results.items() if outcome in ("failure", "error")
    }
    unexpected = sorted(t for t in failed if _function(t) not in EXPECTED_FAILURES)
    assert unexpected == [], f"{run.stdout[-5000:]}"
    assert {_function(t) for t in failed} == set(EXPECTED_FAILURES)
    # The live tests (those that talked to the vaults) are the point: hundreds, not a handful.
    live = [t for t, (outcome, requests) in results.items() if requests and outcome == "passed"]
    assert len(live) >= 100, len(live)
    assert run.returncode == 1  # pytest's status for "some tests failed": the listed ones


def test_every_expected_failure_is_documented():
    text = README.read_text()
    for function, reason in EXPECTED_FAILURES.items():
        assert f"`{function}`" in text, function
        assert reason in text, reason
