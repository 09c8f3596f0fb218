# mypy: allow-untyped-defs, allow-incomplete-defs
"""Rotation policies on the vault's own clock, and vaults that keep their keys in a file:
keys survive a restart, the file is written atomically with mode 0600, and a damaged or
hostile file is refused with a message that names it."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy
from azure.keyvault.keys.crypto import KeyWrapAlgorithm

from envelope import KeyAccessError
from envelope.testing import LocalKeyVault
from tests.conftest import key_client, run_threads
from tests.testing.kv import crypto_client, jwk, remote, span

DAY = 86400


@pytest.fixture
def own_vault():
    """A vault of the test's own: moving its clock must not age the module's other keys."""
    with LocalKeyVault() as vault:
        yield vault


def _policy(
    after: str | None = None,
    before: str | None = None,
    expires: str | None = None,
    action: str = "Rotate",
) -> KeyRotationPolicy:
    kwargs = {"time_after_create": after} if after else {"time_before_expiry": before}
    return KeyRotationPolicy(
        lifetime_actions=[KeyRotationLifetimeAction(action, **kwargs)], expires_in=expires
    )


@pytest.mark.covers("KeyClient.get_key_rotation_policy", "KeyClient.update_key_rotation_policy")
def test_default_policy_then_update_and_read_back(vault):
    with key_client(vault) as client:
        client.create_ec_key("policy-key")
        default = client.get_key_rotation_policy("policy-key")
        assert default.id == f"{vault.url}/keys/policy-key/rotationpolicy"
        assert [(a.action, a.time_before_expiry) for a in default.lifetime_actions] == [
            ("Notify", "P30D")
        ]
        assert default.created_on is None
        updated = client.update_key_rotation_policy("policy-key", _policy("P30D", expires="P90D"))
        assert updated.expires_in == "P90D"
        assert updated.created_on is not None
        fetched = client.get_key_rotation_policy("POLICY-KEY")
        assert fetched.expires_in == "P90D"
        assert fetched.lifetime_actions[0].time_after_create == "P30D"
        assert fetched.created_on == updated.created_on
        # Rotating by hand under a policy with an expiry gives the new version that expiry.
        rotated = client.rotate_key("policy-key")
        assert span(rotated.properties) == datetime.timedelta(days=90)


@pytest.mark.parametrize(
    "body",
    [
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P1D"}, "action": {"type": "Rotate"}}
            ]
        },
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "30 days"}, "action": {"type": "Rotate"}}
            ]
        },
        {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P"}, "action": {"type": "Rotate"}}]},
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P0D"}, "action": {"type": "Rotate"}}
            ]
        },
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": f"P{10**9}D"}, "action": {"type": "Rotate"}}
            ]
        },
        {"lifetimeActions": [{"trigger": {}, "action": {"type": "Rotate"}}]},
        {
            "lifetimeActions": [
                {
                    "trigger": {"timeAfterCreate": "P30D", "timeBeforeExpiry": "P7D"},
                    "action": {"type": "Rotate"},
                }
            ]
        },
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Explode"}}
            ]
        },
        {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": "Rotate"}]},
        {"lifetimeActions": "Rotate"},
        {"attributes": {"expiryTime": "P7D"}},
        {"attributes": {"expiryTime": 90}},
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P85D"}, "action": {"type": "Rotate"}}
            ],
            "attributes": {"expiryTime": "P90D"},
        },
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}},
                {"trigger": {"timeAfterCreate": "P40D"}, "action": {"type": "rotate"}},
            ]
        },
    ],
)
def test_invalid_policies_are_refused(vault, body):
    vault.create_key("strict-policy", "EC")
    with key_client(vault) as client:
        response = remote(client, "PUT", "/keys/strict-policy/rotationpolicy", body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "BadParameter"
        # Nothing was stored: the default policy is still there.
        assert client.get_key_rotation_policy("strict-policy").created_on is None


def test_policy_of_a_missing_key_is_not_found(vault):
    with key_client(vault) as client, pytest.raises(ResourceNotFoundError):
        client.get_key_rotation_policy("no-such-key")


def test_advance_time_runs_due_rotations_dated_when_they_fired(own_vault):
    vault = own_vault
    with key_client(vault) as client:
        first = client.create_ec_key("auto-rotated")
        client.update_key_rotation_policy("auto-rotated", _policy("P30D", expires="P90D"))
        assert vault.advance_time(datetime.timedelta(days=29)) == 0
        assert client.get_key("auto-rotated").id == first.id
        # 100 more days: rotations on days 30, 60, 90 and 120 after the first creation.
        assert vault.advance_time(100 * DAY) == 4
        versions = sorted(
            client.list_properties_of_key_versions("auto-rotated"), key=lambda v: str(v.created_on)
        )
        assert len(versions) == 5
        created = [v.created_on for v in versions]
        steps = [later - earlier for earlier, later in itertools.pairwise(created)]  # type: ignore[operator]
        assert steps == [datetime.timedelta(days=30)] * 4
        assert all(span(v) == datetime.timedelta(days=90) for v in versions[1:])
        latest = client.get_key("auto-rotated")
        assert latest.properties.version == versions[-1].version
        assert jwk(latest).x != jwk(first).x  # new material, not a copy
        assert abs(vault.now() - datetime.datetime.now(datetime.timezone.utc)) > datetime.timedelta(
            days=128
        )


def test_rotation_before_expiry_and_expiry_checks_follow_the_vault_clock(own_vault):
    vault = own_vault
    now = int(vault.now().timestamp())
    kid = vault.create_key("expiring", expires_on=now + 40 * DAY)
    with key_client(vault) as client:
        client.update_key_rotation_policy("expiring", _policy(before="P10D", expires="P60D"))
        assert vault.advance_time(29 * DAY) == 0
        assert vault.advance_time(2 * DAY) == 1  # 10 days before day 40
        new = client.get_key("expiring")
        assert new.id != kid
    # The old version expired on the vault's clock: wrapping (protecting data) is refused,
    # unwrapping old data still works.
    vault.advance_time(10 * DAY)
    version = kid.rsplit("/", 1)[1]
    wrap_body = {"alg": "RSA-OAEP-256", "value": "AAAA"}
    with key_client(vault) as client:
        wrap = remote(client, "POST", f"/keys/expiring/{version}/wrapkey", wrap_body)
        assert wrap.status_code == 403
        assert wrap.json()["error"]["innererror"]["code"] == "KeyExpired"


def test_notify_actions_do_not_rotate_and_time_only_moves_forward(own_vault):
    vault = own_vault
    with key_client(vault) as client:
        client.create_ec_key("notify-only")
        client.update_key_rotation_policy(
            "notify-only", _policy(before="P30D", expires="P60D", action="Notify")
        )
    assert vault.advance_time(400 * DAY) == 0
    with pytest.raises(ValueError, match="forward"):
        vault.advance_time(-1)
    with pytest.raises(ValueError, match="forward"):
        vault.advance_time(float("nan"))


def test_rotations_fall_due_on_requests_too(own_vault):
    """A long-running vault rotates when the wall clock passes a trigger, not only in
    advance_time: the first request after the moment sees the new version."""
    vault = own_vault
    with key_client(vault) as client:
        first = client.create_ec_key("lazy-rotation")
        client.update_key_rotation_policy("lazy-rotation", _policy("P7D"))
        vault._clock.advance(8 * DAY)  # as if a week had passed without any call to the vault
        assert client.get_key("lazy-rotation").id != first.id


def test_keys_survive_a_restart(tmp_path):
    path = tmp_path / "vault.json"
    with LocalKeyVault(path=path) as vault:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        kid = vault.create_key("durable", "RSA", 2048)
        with key_client(vault) as client:
            client.create_ec_key("Durable-EC", curve="P-384", tags={"a": "b"})
            client.rotate_key("durable")
            client.update_key_rotation_policy("durable", _policy("P30D", expires="P90D"))
            client.create_oct_key("gone", hardware_protected=True)
            client.begin_delete_key("gone", _polling_interval=0.01).result()
        with crypto_client(vault, kid) as crypto:
            wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"d" * 32)
        vault.advance_time(5 * DAY)
        clock = vault.now()
    assert not list(tmp_path.glob(".vault.json.*"))  # no temporary file left behind
    with LocalKeyVault(path=path) as vault, key_client(vault) as client:
        versions = list(client.list_properties_of_key_versions("durable"))
        assert len(versions) == 2
        assert client.get_key("durable-ec").properties.tags == {"a": "b"}
        assert client.get_key_rotation_policy("durable").expires_in == "P90D"
        assert client.get_deleted_key("gone").name == "gone"
        assert vault.now() - clock < datetime.timedelta(minutes=5)  # the clock's offset too
        moved = kid.replace(kid.split("/keys/")[0], vault.url)
        with crypto_client(vault, moved) as crypto:
            assert (
                crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key
                == b"d" * 32
            )
        # The policy keeps running after the restart: 30 days after creation it rotates.
        assert vault.advance_time(30 * DAY) == 1


def test_one_vault_per_file(tmp_path):
    path = tmp_path / "vault.json"
    with LocalKeyVault(path=path), pytest.raises(KeyAccessError, match="in use"):
        LocalKeyVault(path=path)
    with LocalKeyVault(path=path):
        pass  # released on close


def test_concurrent_changes_are_all_persisted(tmp_path):
    path = tmp_path / "vault.json"
    with LocalKeyVault(path=path) as vault, key_client(vault) as client:
        _, errors = run_threads(100, lambda n: client.create_ec_key(f"burst-{n}"))
        assert errors == []
    with LocalKeyVault(path=path) as vault, key_client(vault) as client:
        assert len(list(client.list_properties_of_keys())) == 100


def _valid_file(tmp_path: Path) -> Any:
    path = tmp_path / "source.json"
    with LocalKeyVault(path=path) as vault:
        vault.create_key("one", "RSA", 2048)
        vault.create_key("two", "EC", curve="P-256")
    return json.loads(path.read_text())


def _corruptions(document: Any) -> list[tuple[str, object]]:
    rsa_key = document["keys"][0]
    ec_key = document["keys"][1]
    rsa_version = rsa_key["versions"][0]

    def with_key(**changes: Any) -> Any:
        version = {**rsa_version, "key": {**rsa_version["key"], **changes}}
        return {**document, "keys": [{**rsa_key, "versions": [version]}, ec_key]}

    def with_version(**changes: Any) -> Any:
        version = {**rsa_version, **changes}
        return {**document, "keys": [{**rsa_key, "versions": [version]}, ec_key]}

    return [
        ("not JSON", b'{"type": '),
        ("a list", []),
        ("another type", {**document, "type": "something-else"}),
        ("future version", {**document, "version": 2}),
        ("keys not a list", {**document, "keys": {}}),
        ("clock offset infinite", {**document, "clock_offset": 1e400}),
        ("clock offset a string", {**document, "clock_offset": "0"}),
        ("bad name", {**document, "keys": [{**rsa_key, "name": "../etc"}]}),
        ("duplicate names", {**document, "keys": [rsa_key, {**rsa_key}]}),
        ("no versions", {**document, "keys": [{**rsa_key, "versions": []}]}),
        ("bad version id", with_version(version="not-hex")),
        ("inconsistent RSA", with_key(p=ec_key["versions"][0]["key"]["x"])),
        ("missing d", with_key(d=None)),
        ("unknown key_ops", with_key(key_ops=["fly"])),
        (
            "created not a number",
            with_version(attributes={**rsa_version["attributes"], "created": "x"}),
        ),
        (
            "enabled not a bool",
            with_version(attributes={**rsa_version["attributes"], "enabled": 1}),
        ),
        ("tags not strings", with_version(tags={"a": 1})),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
    ]


def test_a_damaged_or_hostile_file_is_refused(tmp_path):
    document = _valid_file(tmp_path)
    for case, content in _corruptions(document):
        path = tmp_path / f"case-{case.replace(' ', '-')}.json"
        raw = content if isinstance(content, bytes) else json.dumps(content).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        with pytest.raises(KeyAccessError) as refused:
            LocalKeyVault(path=path)
        assert str(path) in str(refused.value), case
        assert path.read_bytes() == raw  # a refused file is left as it was


def test_a_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "vault.json"
    with LocalKeyVault(path=path) as vault:
        vault.create_key("k", "EC")
    path.chmod(0o644)
    with pytest.raises(KeyAccessError, match="chmod 600"):
        LocalKeyVault(path=path)


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "vault.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.ftruncate(fd, 65 * 1024 * 1024)  # sparse: large on paper only
    os.close(fd)
    with pytest.raises(KeyAccessError, match="larger than"):
        LocalKeyVault(path=path)


def test_a_disabled_key_in_the_file_stays_disabled(tmp_path):
    path = tmp_path / "vault.json"
    with LocalKeyVault(path=path) as vault:
        vault.create_key("off-after-restart", "EC")
        vault.update_key("off-after-restart", enabled=False)
    with LocalKeyVault(path=path) as vault, key_client(vault) as client:
        with pytest.raises(HttpResponseError) as refused:
            client.get_key("off-after-restart")
        assert refused.value.status_code == 403


CRASHING_WRITER = """
import sys
from envelope.testing import LocalKeyVault

with LocalKeyVault(path=sys.argv[1]) as vault:
    for n in range(10_000):
        vault.create_key(f"k{n}", "oct-HSM", 128)
        print(n, flush=True)
"""


def test_a_killed_vault_leaves_a_file_that_loads(tmp_path):
    """kill -9 in the middle of a stream of writes: the file is always a whole state (the
    last one written before the kill), never a torn one."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "vault.json"
    for round_ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        acknowledged = -1
        for line in writer.stdout:
            acknowledged = int(line)
            if acknowledged >= 20 + 15 * round_:
                break
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()
        # The kernel dropped the dead process's lock: the next vault starts at once.
        with LocalKeyVault(path=path) as vault, key_client(vault) as client:
            names = {p.name for p in client.list_properties_of_keys()}
        # Every key the writer acknowledged is there (each change is durable before the
        # call returns); a later one may be too.
        assert {f"k{n}" for n in range(acknowledged + 1)} <= names
