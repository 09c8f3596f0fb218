# mypy: allow-untyped-defs, allow-incomplete-defs
"""A second, independent client: Microsoft's JavaScript SDK (@azure/keyvault-keys and
@azure/identity from npm, versions pinned by js/package-lock.json) runs the key lifecycle,
wrap/unwrap, sign/verify and backup/restore against LocalKeyVault; Node's own crypto judges
the vault's JWKs and signatures. The script is js/keyvault_check.mjs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from envelope.testing import LocalKeyVault

JS = Path(__file__).resolve().parent / "js"
STEPS = [
    "lifecycle",
    "wrapUnwrap",
    "signVerify",
    "importKey",
    "backupRestore",
    "randomBytesAndRotationPolicy",
]


def _node_modules() -> None:
    """Install the locked packages unless node_modules already matches the lock file."""
    installed = JS / "node_modules" / ".package-lock.json"
    lock = JS / "package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    assert npm is not None, (
        "npm is needed to install the JavaScript SDK (run: npm ci in tests/testing/js)"
    )
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=600, capture_output=True
    )


def test_javascript_sdk_against_local_keyvault():
    node = shutil.which("node")
    assert node is not None, "node (20 or later) is needed for the JavaScript SDK check"
    _node_modules()
    with LocalKeyVault() as vault:
        identity = vault.identity()
        env = {
            **os.environ,
            "VAULT_URL": vault.url,
            "TENANT_ID": vault.tenant_id,
            "CLIENT_ID": identity.client_id,
            "CLIENT_SECRET": identity.client_secret,
            "NODE_EXTRA_CA_CERTS": vault.ca_file,
        }
        result = subprocess.run(
            [node, str(JS / "keyvault_check.mjs")],
            cwd=JS,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        counts = vault.operation_counts()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.split() == [word for step in STEPS for word in ("ok", step)]
    # The requests reached this vault: nothing was answered by the SDK's local crypto alone.
    for operation in (
        "createKey",
        "importKey",
        "rotateKey",
        "deleteKey",
        "purgeDeletedKey",
        "wrapKey",
        "unwrapKey",
        "encrypt",
        "decrypt",
        "sign",
        "verify",
        "backupKey",
        "restoreKey",
        "getRandomBytes",
        "updateKeyRotationPolicy",
    ):
        assert counts.get(operation, 0) >= 1, operation
