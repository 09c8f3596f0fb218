"""Keys, their versions, rotation policies and soft-deleted keys of one vault.

Key names are case-insensitive, as in the service: a key keeps the spelling it was created
with, and any spelling finds it. Versions are immutable values; an update replaces one, so a
handler always holds a consistent version. Every mutation bumps ``generation`` and then tells
the listener (the vault file), outside the lock.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._clock import VaultClock
from ._errors import (
    VaultError,
    bad_parameter,
    conflict,
    deleted_key_not_found,
    forbidden,
    key_not_found,
)
from ._jwk import KeyMaterial
from ._rotation import RotationPolicy

__all__ = [
    "DeletedKey",
    "KeyStore",
    "KeyVersion",
    "ReleasePolicy",
    "check_name",
    "new_version_id",
]

NAME_PATTERN = re.compile(r"[0-9A-Za-z-]{1,127}")
VERSION_PATTERN = re.compile(r"[0-9a-f]{32}")
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
# Outside [nbf, exp) the service refuses the operations that protect new data and still allows
# those that recover or check old data (Key Vault documentation, "date-time controlled
# operations").
TIME_CONTROLLED = frozenset({"encrypt", "wrapKey", "sign"})
# Each rotation makes a key; a policy cannot make a sweep run away.
MAX_ROTATIONS_PER_SWEEP = 1000


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise bad_parameter("The key name must be 1-127 characters of 0-9, a-z, A-Z and '-'.")


def new_version_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class ReleasePolicy:
    """Stored and echoed; the vault performs no key release (that needs Azure Attestation)."""

    content_type: str
    data: str
    immutable: bool

    def to_json(self) -> dict[str, Any]:
        return {"contentType": self.content_type, "data": self.data, "immutable": self.immutable}


@dataclass(frozen=True)
class KeyVersion:
    """One version of a key: its material and attributes."""

    name: str
    version: str
    material: KeyMaterial
    key_ops: tuple[str, ...]
    created: int
    updated: int
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    exportable: bool = False
    release_policy: ReleasePolicy | None = None

    @property
    def kty(self) -> str:
        return self.material.kty

    @property
    def size(self) -> int:
        return self.material.size

    def kid(self, base: str) -> str:
        return f"{base}/keys/{self.name}/{self.version}"

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": RECOVERY_LEVEL,
            "recoverableDays": RECOVERABLE_DAYS,
            "exportable": self.exportable,
        }
        if self.nbf is not None:
            attrs["nbf"] = self.nbf
        if self.exp is not None:
            attrs["exp"] = self.exp
        return attrs

    def bundle(self, base: str) -> dict[str, Any]:
        jwk: dict[str, Any] = {
            "kid": self.kid(base),
            "kty": self.kty,
            "key_ops": list(self.key_ops),
            **self.material.public_jwk(),
        }
        bundle: dict[str, Any] = {
            "key": jwk,
            "attributes": self.attributes(),
            "tags": dict(self.tags),
        }
        if self.release_policy is not None:
            bundle["release_policy"] = self.release_policy.to_json()
        return bundle

    def item(self, base: str) -> dict[str, Any]:
        return {"kid": self.kid(base), "attributes": self.attributes(), "tags": dict(self.tags)}

    def check_usable(self, operation: str, now: float) -> None:
        """Refuse an operation the key's state does not allow, as the service does."""
        if not self.enabled:
            raise forbidden(
                f"Operation {operation} is not allowed on a disabled key.", "KeyDisabled"
            )
        if operation not in TIME_CONTROLLED:
            return
        if self.nbf is not None and now < self.nbf:
            raise forbidden(
                f"Operation {operation} is not allowed on a key that is not yet valid.",
                "KeyNotYetValid",
            )
        if self.exp is not None and now >= self.exp:
            raise forbidden(
                f"Operation {operation} is not allowed on an expired key.", "KeyExpired"
            )


@dataclass(frozen=True)
class DeletedKey:
    versions: tuple[KeyVersion, ...]
    policy: RotationPolicy | None
    deleted_date: int
    scheduled_purge_date: int


@dataclass(frozen=True)
class StoredKey:
    """A key's whole state, as backups and the vault file carry it."""

    versions: tuple[KeyVersion, ...]
    policy: RotationPolicy | None


@dataclass(frozen=True)
class Snapshot:
    generation: int
    keys: tuple[StoredKey, ...]
    deleted: tuple[DeletedKey, ...]


@dataclass(frozen=True)
class DueRotation:
    key: str
    latest: KeyVersion
    due: int
    policy: RotationPolicy


class KeyStore:
    """All keys of one vault. Every method is atomic under one lock."""

    def __init__(self, clock: VaultClock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, list[KeyVersion]] = {}
        self._policies: dict[str, RotationPolicy] = {}
        self._deleted: dict[str, DeletedKey] = {}
        self._generation = 0
        # The earliest moment a rotation policy falls due; requests check it without the lock.
        self.next_rotation: float | None = None
        self.listener: Callable[[int], None] | None = None

    # bookkeeping

    def _changed(self) -> int:
        """Under the lock: note a mutation and recompute when the next rotation is due."""
        self._generation += 1
        due = [item.due for item in self._due_rotations()]
        self.next_rotation = min(due) if due else None
        return self._generation

    def _notify(self, generation: int) -> None:
        if self.listener is not None:
            self.listener(generation)

    def _versions(self, name: str) -> list[KeyVersion]:
        versions = self._keys.get(name.lower())
        if not versions:
            raise key_not_found(name)
        return versions

    def _refuse_deleted(self, name: str) -> None:
        if name.lower() in self._deleted:
            raise conflict(
                f"Key {name} is currently in a deleted but recoverable state, and its name "
                "cannot be reused; in this state, the key can only be recovered or purged."
            )

    # reads

    def latest(self, name: str) -> KeyVersion:
        with self._lock:
            return self._versions(name)[-1]

    def find(self, name: str, version: str) -> KeyVersion:
        """A version by id; an empty id is the latest, as the SDK sends ``/keys/n//op``."""
        with self._lock:
            versions = self._versions(name)
            if not version:
                return versions[-1]
            wanted = version.lower()
            for candidate in versions:
                if candidate.version == wanted:
                    return candidate
        raise key_not_found(name, version)

    def versions(self, name: str) -> list[KeyVersion]:
        """Every version of a key; none for an unknown name, as the service answers (200 and
        an empty list, not 404)."""
        with self._lock:
            return list(self._keys.get(name.lower(), ()))

    def latest_of_each(self) -> list[KeyVersion]:
        with self._lock:
            return [self._keys[key][-1] for key in sorted(self._keys)]

    def policy(self, name: str) -> RotationPolicy:
        with self._lock:
            self._versions(name)
            return self._policies.get(name.lower()) or RotationPolicy.default()

    def stored(self, name: str) -> StoredKey:
        with self._lock:
            return StoredKey(tuple(self._versions(name)), self._policies.get(name.lower()))

    def deleted(self, name: str) -> DeletedKey:
        with self._lock:
            try:
                return self._deleted[name.lower()]
            except KeyError:
                raise deleted_key_not_found(name) from None

    def all_deleted(self) -> list[DeletedKey]:
        with self._lock:
            return [self._deleted[key] for key in sorted(self._deleted)]

    def snapshot(self) -> Snapshot:
        with self._lock:
            keys = tuple(
                StoredKey(tuple(versions), self._policies.get(key))
                for key, versions in sorted(self._keys.items())
            )
            return Snapshot(self._generation, keys, tuple(self._deleted.values()))

    # writes

    def add_version(self, version: KeyVersion, *, apply_policy: bool = True) -> KeyVersion:
        """Add a new version (the first makes the key). It takes the key's existing spelling,
        and the expiry of the key's rotation policy unless ``apply_policy`` is false."""
        with self._lock:
            self._refuse_deleted(version.name)
            existing = self._keys.get(version.name.lower())
            if existing:
                version = dataclasses.replace(version, name=existing[0].name)
            policy = self._policies.get(version.name.lower())
            if apply_policy and policy is not None and version.exp is None:
                version = dataclasses.replace(version, exp=policy.expiry_for(version.created))
            self._keys.setdefault(version.name.lower(), []).append(version)
            generation = self._changed()
        self._notify(generation)
        return version

    def update(self, name: str, version: str, **changes: Any) -> KeyVersion:
        """Replace attributes of one version (the latest when ``version`` is empty)."""
        with self._lock:
            versions = self._versions(name)
            index = len(versions) - 1
            if version:
                wanted = version.lower()
                matches = [i for i, v in enumerate(versions) if v.version == wanted]
                if not matches:
                    raise key_not_found(name, version)
                index = matches[0]
            current = versions[index]
            policy = changes.get("release_policy")
            if changes.get("exportable") and (policy or current.release_policy) is None:
                raise bad_parameter("An exportable key needs a release policy.")
            if (
                policy is not None
                and current.release_policy is not None
                and current.release_policy.immutable
                and policy != current.release_policy
            ):
                raise bad_parameter("The key's release policy is immutable and cannot change.")
            updated = dataclasses.replace(current, updated=self.clock.seconds(), **changes)
            versions[index] = updated
            generation = self._changed()
        self._notify(generation)
        return updated

    def set_policy(self, name: str, body: dict[str, Any]) -> RotationPolicy:
        with self._lock:
            self._versions(name)
            previous = self._policies.get(name.lower())
            policy = RotationPolicy.parse(body, self.clock.seconds(), previous)
            self._policies[name.lower()] = policy
            generation = self._changed()
        self._notify(generation)
        return policy

    def delete(self, name: str) -> DeletedKey:
        with self._lock:
            versions = self._versions(name)
            key = name.lower()
            del self._keys[key]
            now = self.clock.seconds()
            deleted = DeletedKey(
                tuple(versions), self._policies.pop(key, None), now, now + RECOVERABLE_DAYS * 86400
            )
            self._deleted[key] = deleted
            generation = self._changed()
        self._notify(generation)
        return deleted

    def purge(self, name: str) -> None:
        with self._lock:
            if self._deleted.pop(name.lower(), None) is None:
                raise deleted_key_not_found(name)
            generation = self._changed()
        self._notify(generation)

    def _put(self, stored: StoredKey | DeletedKey) -> int:
        """Under the lock: make a key with these versions and policy live."""
        key = stored.versions[-1].name.lower()
        self._keys[key] = list(stored.versions)
        if stored.policy is not None:
            self._policies[key] = stored.policy
        return self._changed()

    def recover(self, name: str) -> KeyVersion:
        with self._lock:
            deleted = self._deleted.pop(name.lower(), None)
            if deleted is None:
                raise deleted_key_not_found(name)
            generation = self._put(deleted)
        self._notify(generation)
        return deleted.versions[-1]

    def restore(self, stored: StoredKey) -> KeyVersion:
        """Put a backed-up key back, every version as it was; refused while the name is in
        use or deleted-but-recoverable, as the service does."""
        name = stored.versions[-1].name
        with self._lock:
            self._refuse_deleted(name)
            if name.lower() in self._keys:
                raise conflict(f"Key {name} already exists; restore needs a free name.")
            generation = self._put(stored)
        self._notify(generation)
        return stored.versions[-1]

    def load(self, keys: list[StoredKey], deleted: list[DeletedKey]) -> None:
        """Replace everything with the state read from a vault file."""
        with self._lock:
            self._keys = {k.versions[0].name.lower(): list(k.versions) for k in keys}
            self._policies = {
                k.versions[0].name.lower(): k.policy for k in keys if k.policy is not None
            }
            self._deleted = {d.versions[0].name.lower(): d for d in deleted}
            self._changed()

    # rotation

    def _due_rotations(self) -> list[DueRotation]:
        due = []
        for key, policy in self._policies.items():
            versions = self._keys.get(key)
            if not versions:
                continue
            latest = versions[-1]
            when = policy.rotation_due(latest.created, latest.exp)
            if when is not None:
                due.append(DueRotation(key, latest, when, policy))
        return due

    def due_rotations(self, now: float) -> list[DueRotation]:
        with self._lock:
            return [item for item in self._due_rotations() if item.due <= now]

    def add_rotated(self, item: DueRotation, version: KeyVersion) -> bool:
        """Add an automatic rotation unless another one got there first."""
        with self._lock:
            versions = self._keys.get(item.key)
            if not versions or versions[-1] is not item.latest:
                return False
            versions.append(version)
            generation = self._changed()
        self._notify(generation)
        return True


def new_version(
    name: str,
    material: KeyMaterial,
    key_ops: tuple[str, ...] | None,
    created: int,
    **attributes: Any,
) -> KeyVersion:
    """A version with a fresh id, created (and updated) at ``created``; the key type's
    default operations unless ``key_ops`` is given."""
    ops = material.default_ops if key_ops is None else key_ops
    return KeyVersion(name, new_version_id(), material, ops, created, created, **attributes)


def new_version_like(latest: KeyVersion, material: KeyMaterial, created: int) -> KeyVersion:
    """The next version of a key: same type, operations and tags, new material."""
    return new_version(latest.name, material, latest.key_ops, created, tags=dict(latest.tags))


def check_version_id(version: str) -> None:
    if not VERSION_PATTERN.fullmatch(version):
        raise VaultError(400, "BadParameter", "A key version is 32 lower-case hex digits.")


def sweep_rotations(
    store: KeyStore, now: float, generate: Callable[[KeyVersion], KeyMaterial]
) -> int:
    """Run every rotation that fell due by ``now``, each version created at the moment its
    trigger fired, so that a jump of a year under a 30-day policy leaves a year of versions.
    Returns how many versions it made."""
    made = 0
    while made < MAX_ROTATIONS_PER_SWEEP:
        due = store.due_rotations(now)
        if not due:
            break
        for item in due:
            # A trigger before the latest version's creation (a hand-set exp) fires now.
            created = max(item.due, item.latest.created)
            version = new_version_like(item.latest, generate(item.latest), created)
            version = dataclasses.replace(version, exp=item.policy.expiry_for(created))
            if store.add_rotated(item, version):
                made += 1
    return made
