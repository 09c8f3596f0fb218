# mypy: allow-untyped-defs, allow-incomplete-defs
"""KeyVaultKey through the real azure-keyvault-keys SDK against LocalKeyVault over TLS."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import envelope.keyvault
from envelope import DecryptionError, Envelope, KeyAccessError, LocalKey, WrappedKey, inspect
from envelope._format import decode_header, encode_header
from envelope.keyvault import KeyVaultKey
from envelope.testing import LocalKeyVault
from tests.conftest import kek, round_trips_in_threads
from tests.conftest import key_client as admin
from tests.keyvault.conftest import unique


def test_public_surface():
    assert envelope.keyvault.__all__ == [
        "AsyncDefaultCredential",
        "DefaultCredential",
        "KeyVaultKey",
    ]


def test_rsa_and_oct_hsm_layers_round_trip_and_decrypt_in_a_fresh_process(vault, tmp_path):
    rsa_name, oct_name = unique("rsa"), unique("oct")
    rsa_kid = vault.create_key(rsa_name, "RSA-HSM")
    oct_kid = vault.create_key(oct_name, "oct-HSM")
    with kek(vault, rsa_name) as inner, kek(vault, oct_name) as outer:
        env = Envelope([inner, outer])
        blob = env.encrypt(b"layered secret", context={"tenant": "contoso"})
        # RSA wraps locally with the public key; the oct-HSM wrap was performed by the vault.
        counts = vault.operation_counts()
        assert counts["wrapKey"] == 1
        assert counts["getKey"] == 2
        info = inspect(blob)
        assert info.layers[0].key_ids == (rsa_kid,)
        assert info.layers[0].wrap_algorithms == ("RSA-OAEP-256",)
        assert info.layers[1].key_ids == (oct_kid,)
        assert info.layers[1].wrap_algorithms == ("A256KW",)
        assert env.decrypt(blob, context={"tenant": "contoso"}) == b"layered secret"

    message = tmp_path / "message.env"
    message.write_bytes(blob)
    identity = vault.identity()
    script = (
        "import sys\n"
        "from azure.identity import ClientSecretCredential\n"
        "from envelope import Envelope\n"
        "from envelope.keyvault import KeyVaultKey\n"
        "from envelope.transport import TLSPolicy\n"
        "url, ca, tenant, cid, secret, inner, outer, path = sys.argv[1:]\n"
        "policy = TLSPolicy(ca_file=ca)\n"
        "with ClientSecretCredential(tenant, cid, secret, authority=url,\n"
        "        disable_instance_discovery=True, connection_verify=ca) as cred:\n"
        "    keys = [KeyVaultKey(f'{url}/keys/{n}', cred, tls_policy=policy)\n"
        "            for n in (inner, outer)]\n"
        "    env = Envelope(keys)\n"
        "    data = open(path, 'rb').read()\n"
        "    sys.stdout.buffer.write(env.decrypt(data, context={'tenant': 'contoso'}))\n"
        "    for key in keys:\n"
        "        key.close()\n"
    )
    args = [vault.url, vault.ca_file, vault.tenant_id, identity.client_id]
    args += [identity.client_secret, rsa_name, oct_name, str(message)]
    result = subprocess.run(  # noqa: PLW1510 - returncode checked below with stderr shown
        [sys.executable, "-W", "error", "-c", script, *args],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"layered secret"


def test_oct_hsm_wrap_is_done_by_the_service_and_another_client_unwraps(vault):
    name = unique("oct")
    kid = vault.create_key(name, "oct-HSM")
    with kek(vault, name) as first, kek(vault, kid) as second:
        data_key = os.urandom(32)
        wrapped = first.wrap_key(data_key)
        assert vault.operation_counts()["wrapKey"] == 1
        assert wrapped.key_id == kid
        assert wrapped.algorithm == "A256KW"
        assert len(wrapped.ciphertext) == 40
        # A different client (no shared state) gets the key back through the service: the
        # SDK's local wrap with a random key would fail exactly here.
        assert second.unwrap_key(wrapped) == data_key
        assert vault.operation_counts()["unwrapKey"] == 1


def test_rsa_unwrap_is_remote_and_tampering_is_a_decryption_error(vault):
    name = unique("rsa")
    vault.create_key(name)
    with kek(vault, name) as key:
        data_key = os.urandom(32)
        wrapped = key.wrap_key(data_key)
        assert "wrapKey" not in vault.operation_counts()
        assert key.unwrap_key(wrapped) == data_key
        assert vault.operation_counts()["unwrapKey"] == 1
        flipped = bytearray(wrapped.ciphertext)
        flipped[5] ^= 1
        with pytest.raises(DecryptionError):
            key.unwrap_key(wrapped._replace(ciphertext=bytes(flipped)))
        # A legacy padding-oracle-prone algorithm is refused before any request.
        before = vault.operation_counts()
        with pytest.raises(DecryptionError):
            key.unwrap_key(wrapped._replace(algorithm="RSA1_5"))
        assert vault.operation_counts() == before


def test_wrapped_keys_that_cannot_fit_are_decryption_errors_without_a_vault_call(vault):
    """FORMAT.md section 3: a wrap id or a length that cannot fit the key fails that
    candidate as a wrapped key that does not authenticate, and is seen without the vault."""
    rsa_name, oct_name = unique("rsa"), unique("oct")
    vault.create_key(rsa_name)
    vault.create_key(oct_name, "oct-HSM")
    with kek(vault, rsa_name) as rsa_key, kek(vault, oct_name) as oct_key:
        rsa_wrapped, oct_wrapped = (
            rsa_key.wrap_key(os.urandom(32)),
            oct_key.wrap_key(os.urandom(32)),
        )
        vault.reset_counts()
        cannot_fit = [
            (rsa_key, rsa_wrapped._replace(algorithm="A256GCM", ciphertext=bytes(60))),
            (rsa_key, rsa_wrapped._replace(ciphertext=rsa_wrapped.ciphertext[:255])),
            (oct_key, oct_wrapped._replace(ciphertext=oct_wrapped.ciphertext[:39])),
            (oct_key, oct_wrapped._replace(ciphertext=oct_wrapped.ciphertext + bytes(8))),
            (oct_key, oct_wrapped._replace(algorithm="CKM_AES_KEY_WRAP_PAD", ciphertext=bytes(48))),
            (oct_key, oct_wrapped._replace(algorithm="A256GCM", ciphertext=bytes(60))),
        ]
        for key, wrapped in cannot_fit:
            with pytest.raises(DecryptionError):
                key.unwrap_key(wrapped)
        assert vault.operation_counts() == {}
        # A wrap id of the wrong family with a length that could fit: the vault refuses it
        # (400), which is the same kind of failure.
        with pytest.raises(DecryptionError):
            rsa_key.unwrap_key(rsa_wrapped._replace(algorithm="A256KW", ciphertext=bytes(40)))
        with pytest.raises(DecryptionError):
            oct_key.unwrap_key(
                oct_wrapped._replace(algorithm="RSA-OAEP-256", ciphertext=bytes(256))
            )
        assert vault.operation_counts()["unwrapKey"] == 2

        # In a message, the layer's next KEK opens it, and the vault was never asked.
        spare = LocalKey.generate()
        env = Envelope([[oct_key, spare]])
        blob = env.encrypt(b"fits")
        header, length = decode_header(blob)
        oct_record, spare_record = header.layers[0].wrapped_keys
        short = oct_record._replace(ciphertext=oct_record.ciphertext[:39])
        layer = header.layers[0]._replace(wrapped_keys=(short, spare_record))
        forged = encode_header(header._replace(layers=(layer,))) + bytes(blob[length:])
        vault.reset_counts()
        assert env.decrypt(forged) == b"fits"
        assert "unwrapKey" not in vault.operation_counts()


VAULT = "https://contoso.vault.azure.net"
VERSION = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("header_id", "accepted"),
    [
        (f"{VAULT}/keys/k/{VERSION}", True),
        (f"{VAULT}:443/keys/K/{VERSION.upper()}", True),
        (f"https://CONTOSO.vault.azure.net/keys/k/{VERSION}", True),
        (f"{VAULT}/keys/k", False),  # an unversioned header never names what wrapped
        (f"{VAULT}/keys/k2/{VERSION}", False),
        (f"{VAULT}:8443/keys/k/{VERSION}", False),
        (f"http://contoso.vault.azure.net/keys/k/{VERSION}", False),
        (f"https://contoso.vault.azure.net.evil.example/keys/k/{VERSION}", False),
        (f"https://evil.example/keys/k/{VERSION}", False),
        (f"https://user@contoso.vault.azure.net/keys/k/{VERSION}", False),
        (f"{VAULT}/keys/k/{VERSION}?x=1", False),
        (f"{VAULT}/keys/k/{VERSION}#f", False),
        (f"{VAULT}/keys/k/../k/{VERSION}", False),
        (f"{VAULT}/keys/k/{VERSION}/wrapkey", False),
        (f"{VAULT}/keys/k/{VERSION[:-1]}g", False),
        (f"{VAULT}/secrets/k/{VERSION}", False),
        ("local:0123", False),
        # Spellings a lenient URL parser would normalise away: exact means exact.
        (f" {VAULT}/keys/k/{VERSION}", False),
        (f"{VAULT}/keys/k/{VERSION}\n", False),
        (f"{VAULT}/keys/\tk/{VERSION}", False),
        (f"{VAULT}/ke\rys/k/{VERSION}", False),
        (f"HTTPS://contoso.vault.azure.net/keys/k/{VERSION}", False),
        (f"Https://contoso.vault.azure.net/keys/k/{VERSION}", False),
        (f"{VAULT}:0443/keys/k/{VERSION}", False),
        (f"{VAULT}:00443/keys/k/{VERSION}", False),
        (f"{VAULT}:443:443/keys/k/{VERSION}", False),
        (f"{VAULT}:/keys/k/{VERSION}", False),
        (f"{VAULT}/keys//k/{VERSION}", False),
        (f"{VAULT}//keys/k/{VERSION}", False),
        (f"{VAULT}/keys/k/{VERSION}/", False),
        (f"{VAULT}/Keys/k/{VERSION}", False),
        (f"{VAULT}\x00/keys/k/{VERSION}", False),
    ],
)
def test_versionless_id_accepts_exactly_the_versions_of_that_key(header_id, accepted):
    key = KeyVaultKey(f"{VAULT}/keys/k", object())
    assert key.can_unwrap(header_id) is accepted


def test_versioned_id_accepts_only_that_version():
    key = KeyVaultKey(f"{VAULT}/keys/k/{VERSION}", object())
    assert key.can_unwrap(f"{VAULT}/keys/k/{VERSION}")
    assert not key.can_unwrap(f"{VAULT}/keys/k/{'f' * 32}")


def test_invalid_key_ids_and_settings_are_refused():
    for bad in ("http://v.vault.azure.net/keys/k", "https://v/secrets/k", "https://v/keys/"):
        with pytest.raises(ValueError, match="not a Key Vault key id"):
            KeyVaultKey(bad)
    with pytest.raises(ValueError, match="timeout"):
        KeyVaultKey(f"{VAULT}/keys/k", timeout=0)


def test_challenge_resource_is_verified_except_on_loopback(vault):
    # The SDK's check is what keeps a token from a vault that names another resource.
    assert KeyVaultKey(f"{VAULT}/keys/k")._client_options()["verify_challenge_resource"]
    assert not kek(vault, "k")._client_options()["verify_challenge_resource"]
    assert not KeyVaultKey("https://[::1]:8443/keys/k")._client_options()[
        "verify_challenge_resource"
    ]


def test_foreign_vault_or_key_in_the_header_makes_no_connection(vault):
    ours = unique("ours")
    vault.create_key(ours)
    theirs_here = unique("theirs")
    vault.create_key(theirs_here)
    with LocalKeyVault() as other:
        other.create_key(ours)  # same name, other vault
        with (
            kek(other, ours) as foreign_key,
            kek(vault, theirs_here) as other_key_here,
            kek(vault, ours) as our_key,
        ):
            env = Envelope([our_key, LocalKey.generate()])
            local = env.layers[1][0]
            for wrapping in (foreign_key, other_key_here):
                forged = Envelope([wrapping, local]).encrypt(b"x")
                vault.reset_counts()
                other.reset_counts()
                with pytest.raises(KeyAccessError, match="no configured key"):
                    env.decrypt(forged)
                # Not a token request, not an unwrap: nothing reached either vault.
                assert vault.operation_counts() == {}
                assert other.operation_counts() == {}


def test_permission_denied_is_a_key_access_error_with_the_vault_code(vault):
    name = unique("rsa")
    vault.create_key(name)
    wrap_only = vault.add_identity(unique("wrapper"), ["get", "wrapKey"])
    with kek(vault, name) as full, kek(vault, name, wrap_only) as limited:
        blob = Envelope([limited, LocalKey.generate()]).encrypt(b"x")
        with pytest.raises(KeyAccessError) as caught:
            Envelope([limited, LocalKey.generate()]).decrypt(blob)
        assert caught.value.code is None or caught.value.code  # a layer error names the key
        data_key = os.urandom(32)
        with pytest.raises(KeyAccessError) as direct:
            limited.unwrap_key(full.wrap_key(data_key))
        assert direct.value.code == "Forbidden"
        assert "unwrapKey" in str(direct.value)


def test_disabled_key_stops_wrap_and_unwrap(vault):
    name = unique("rsa")
    vault.create_key(name)
    with kek(vault, name, key_info_ttl=0) as key:
        env = Envelope([key, LocalKey.generate()])
        blob = env.encrypt(b"x")
        vault.update_key(name, enabled=False)
        with pytest.raises(KeyAccessError) as wrap_error:
            env.encrypt(b"y")
        assert wrap_error.value.code == "Forbidden"
        assert "KeyDisabled" in str(wrap_error.value)
        with pytest.raises(KeyAccessError) as unwrap_error:
            env.decrypt(blob)
        assert unwrap_error.value.code == "Forbidden"
        assert "KeyDisabled" in str(unwrap_error.value)
        vault.update_key(name, enabled=True)
        assert env.decrypt(blob) == b"x"


def test_expired_or_not_yet_valid_key_refuses_new_wraps_but_old_messages_open(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    with kek(vault, name, key_info_ttl=0) as key:
        env = Envelope([key, LocalKey.generate()])
        blob = env.encrypt(b"old")
        vault.update_key(name, expires_on=int(time.time()) - 10)
        with pytest.raises(KeyAccessError) as expired:
            env.encrypt(b"new")
        assert expired.value.code == "Forbidden"
        assert "KeyExpired" in str(expired.value)
        # Key Vault lets expired keys unwrap (exp restricts protecting operations only).
        assert env.decrypt(blob) == b"old"
    later = unique("rsa")
    vault.create_key(later, not_before=int(time.time()) + 3600)
    with kek(vault, later) as key, pytest.raises(KeyAccessError) as early:
        key.wrap_key(os.urandom(32))
    assert early.value.code == "Forbidden"
    assert "KeyNotYetValid" in str(early.value)


def test_deleted_key_is_crypto_shredded(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    with kek(vault, name) as key, admin(vault) as client:
        env = Envelope([key, LocalKey.generate()])
        blob = env.encrypt(b"shred me")
        client.begin_delete_key(name, _polling_interval=0.01).result()
        with pytest.raises(KeyAccessError) as caught:
            env.decrypt(blob)
        assert caught.value.code == "KeyNotFound"


def test_rotation_new_messages_use_the_new_version_old_ones_still_open(vault):
    name = unique("rsa")
    first = vault.create_key(name)
    with kek(vault, name, key_info_ttl=0) as key:
        env = Envelope([key, LocalKey.generate()])
        old = env.encrypt(b"old")
        second = vault.create_key(name)  # a rotation: a new current version
        new = env.encrypt(b"new")
        assert inspect(old).layers[0].key_ids == (first,)
        assert inspect(new).layers[0].key_ids == (second,)
        assert env.decrypt(old) == b"old"
        assert env.decrypt(new) == b"new"
    # A pinned version opens its own messages only.
    with kek(vault, first) as pinned:
        pinned_env = Envelope([pinned, env.layers[1][0]])
        assert pinned_env.decrypt(old) == b"old"
        with pytest.raises(KeyAccessError, match="no configured key"):
            pinned_env.decrypt(new)


def test_rewrap_to_a_new_version_and_to_a_new_vault(vault):
    name = unique("rsa")
    first = vault.create_key(name)
    local = LocalKey.generate()
    with LocalKeyVault() as second_vault, kek(vault, name, key_info_ttl=0) as old_key:
        env = Envelope([old_key, local])
        blob = env.encrypt(b"payload")
        newest = vault.create_key(name)
        rewrapped = env.rewrap(blob)
        assert inspect(rewrapped).layers[0].key_ids == (newest,)
        # The body is untouched: only the header changed.
        body = bytes(blob)[inspect(blob).header_length :]
        assert bytes(rewrapped)[inspect(rewrapped).header_length :] == body
        assert env.decrypt(rewrapped) == b"payload"

        moved_name = unique("rsa")
        second_vault.create_key(moved_name)
        symmetric_name = unique("oct")
        second_vault.create_key(symmetric_name, "oct-HSM")
        with (
            kek(second_vault, moved_name) as new_key,
            kek(second_vault, symmetric_name) as symmetric,
            admin(vault) as client,
        ):
            # Not to a symmetric key: the data key came from an RSA wrap, which anyone
            # holding the public key can make, and an oct-HSM wrap would vouch for it
            # (FORMAT.md section 7).
            with pytest.raises(KeyAccessError, match="public-key wrap"):
                Envelope([[symmetric, old_key], local]).rewrap(blob)
            migrating = Envelope([[new_key, old_key], local])
            moved = migrating.rewrap(blob)
            assert inspect(moved).layers[0].key_ids[1] == newest
            assert first not in inspect(moved).layers[0].key_ids
            client.begin_delete_key(name, _polling_interval=0.01).result()
            only_new = Envelope([new_key, local])
            assert only_new.decrypt(moved) == b"payload"
            with pytest.raises(KeyAccessError):
                only_new.decrypt(blob)


def test_throttling_and_outage_storms_recover_through_sdk_retries(vault):
    name = unique("oct")
    vault.create_key(name, "oct-HSM")
    with kek(vault, name) as key:
        env = Envelope([key, LocalKey.generate()])
        blob = env.encrypt(b"x")
        vault.inject_fault("unwrapKey", status=429, retry_after=0.02, count=3)
        assert env.decrypt(blob) == b"x"
        vault.inject_fault("wrapKey", status=503, count=3)
        assert env.decrypt(env.encrypt(b"y")) == b"y"
        vault.inject_fault("unwrapKey", status=503)  # longer than the retries
        started = time.monotonic()
        with pytest.raises(KeyAccessError) as caught:
            env.decrypt(blob)
        assert caught.value.code == "ServiceUnavailable"
        assert time.monotonic() - started < 5


def test_a_down_vault_falls_through_to_the_layers_other_kek(vault):
    name = unique("rsa")
    vault.create_key(name)
    local = LocalKey.generate()
    dead = LocalKeyVault()
    try:
        dead_name = unique("rsa")
        dead.create_key(dead_name)
        with kek(dead, dead_name) as down, kek(vault, name) as up:
            env = Envelope([[down, up], local])
            blob = env.encrypt(b"available")
            dead.close()  # connection refused from now on
            started = time.monotonic()
            assert env.decrypt(blob) == b"available"
            assert time.monotonic() - started < 5
    finally:
        dead.close()


def test_a_hanging_vault_falls_through_within_the_time_bound(vault):
    name, slow_name = unique("rsa"), unique("rsa")
    vault.create_key(name)
    local = LocalKey.generate()
    with LocalKeyVault() as slow:
        slow.create_key(slow_name)
        with (
            kek(slow, slow_name, read_timeout=0.3, retry_total=1, timeout=1.0) as hanging,
            kek(vault, name) as up,
        ):
            env = Envelope([[hanging, up], local])
            blob = env.encrypt(b"bounded")
            slow.inject_fault("unwrapKey", latency=5)
            started = time.monotonic()
            assert env.decrypt(blob) == b"bounded"
            # two attempts of at most read_timeout, plus backoff and the healthy vault
            assert time.monotonic() - started < 2.5
            slow.clear_faults()


def test_all_keks_of_a_layer_failing_reports_every_reason(vault):
    name = unique("rsa")
    vault.create_key(name)
    other_name = unique("rsa")
    vault.create_key(other_name)
    with kek(vault, name) as a, kek(vault, other_name) as b:
        env = Envelope([[a, b], LocalKey.generate()])
        blob = env.encrypt(b"x")
        vault.update_key(name, enabled=False)
        vault.update_key(other_name, enabled=False)
        with pytest.raises(KeyAccessError, match="none of 2 keys") as caught:
            env.decrypt(blob)
        assert caught.value.code == "Forbidden"
        # Each KEK's own error is kept, in the order they were tried.
        assert [e.code for e in caught.value.errors] == ["Forbidden", "Forbidden"]
        assert [e.key_id for e in caught.value.errors] == [a.key_id, b.key_id]


def test_every_cause_is_kept_when_a_layers_keks_fail_differently(vault):
    name = unique("rsa")
    vault.create_key(name)
    dead = LocalKeyVault()
    try:
        dead_name = unique("rsa")
        dead.create_key(dead_name)
        with kek(vault, name) as disabled, kek(dead, dead_name) as unreachable:
            env = Envelope([[disabled, unreachable], LocalKey.generate()])
            blob = env.encrypt(b"x")
            vault.update_key(name, enabled=False)
            dead.close()
            with pytest.raises(KeyAccessError) as caught:
                env.decrypt(blob)
            first, second = caught.value.errors
            assert first.code == "Forbidden"
            assert first.key_id == disabled.key_id
            assert second.key_id == unreachable.key_id
            assert second.code != "Forbidden"
            assert caught.value.code == second.code
            assert str(first) in str(caught.value)
            assert str(second) in str(caught.value)
    finally:
        dead.close()


def test_eight_threads_share_kvks(vault):
    rsa_name, oct_name = unique("rsa"), unique("oct")
    vault.create_key(rsa_name)
    vault.create_key(oct_name, "oct-HSM")
    with kek(vault, rsa_name) as inner, kek(vault, oct_name) as outer:
        env = Envelope([inner, outer])
        # round_trips_in_threads also checks that every thread ended.
        assert round_trips_in_threads(env, threads=8, messages=5) == []
        assert vault.operation_counts()["unwrapKey"] == 80


def test_wrong_header_version_of_our_key_goes_to_our_vault_only(vault):
    # A header may name any version of a configured key: the request goes to our vault and
    # our key name, and a version that does not exist is the vault's KeyNotFound.
    name = unique("rsa")
    vault.create_key(name)
    with kek(vault, name) as key:
        wrapped = WrappedKey(f"{vault.url}/keys/{name}/{'a' * 32}", "RSA-OAEP-256", b"\0" * 256)
        with pytest.raises(KeyAccessError) as caught:
            key.unwrap_key(wrapped)
        assert caught.value.code == "KeyNotFound"
