"""Persistence: the vault's keys in one JSON file, rewritten atomically after each change.

The file holds private keys: it is written with mode 0600 and refused if others can read it.
On load it is hostile input like any request: bounded in size, one schema, every key through
the record parser. A file that cannot be used is a :class:`~envelope.KeyAccessError` naming
the file and the problem; the vault does not start on a half-read state.
"""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from pathlib import Path
from typing import IO, Any

from envelope._errors import KeyAccessError
from envelope._files import atomic_output

from ._jwk import RecordError
from ._records import deleted_from_record, deleted_record, key_from_record, key_record
from ._store import DeletedKey, KeyStore, StoredKey

__all__ = ["VaultFile"]

FILE_TYPE = "envelope-local-keyvault"
FILE_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_KEYS = 100_000
# A clock moved further than this is a damaged file, not a test.
MAX_CLOCK_OFFSET = 1000 * 365 * 86400

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class VaultFile:
    """The file of one persistent vault; a second vault on the same file is refused."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._saved = -1
        self._lock_handle: IO[bytes] | None = None
        if fcntl is not None:
            try:
                handle = open(f"{self.path}.lock", "ab")  # noqa: SIM115 - held until close()
            except OSError as exc:
                raise KeyAccessError(f"cannot open {self.path}.lock: {exc.strerror}") from exc
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise KeyAccessError(f"{self.path} is in use by another LocalKeyVault") from None
            self._lock_handle = handle

    def close(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _fail(self, problem: str) -> KeyAccessError:
        return KeyAccessError(f"local Key Vault file {self.path}: {problem}")

    def load(self) -> tuple[list[StoredKey], list[DeletedKey], float] | None:
        """The keys, deleted keys and clock offset in the file; None if there is no file."""
        try:
            with open(self.path, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                raw = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail(f"cannot read it: {exc.strerror}") from exc
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise self._fail(
                f"it holds private keys but group or others may read it (mode "
                f"{stat.S_IMODE(mode):04o}); run: chmod 600 {self.path}"
            )
        if len(raw) > MAX_FILE_BYTES:
            raise self._fail(f"it is larger than {MAX_FILE_BYTES} bytes")
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._fail("it is not JSON") from None
        try:
            return self._parse(document)
        except RecordError as exc:
            raise self._fail(str(exc)) from None

    def _parse(self, document: Any) -> tuple[list[StoredKey], list[DeletedKey], float]:
        if not isinstance(document, dict) or document.get("type") != FILE_TYPE:
            raise RecordError("it is not a local Key Vault file")
        if document.get("version") != FILE_VERSION:
            raise RecordError(f"unsupported file version {document.get('version')!r}")
        raw_keys, raw_deleted = document.get("keys"), document.get("deleted")
        offset = document.get("clock_offset")
        if not isinstance(raw_keys, list) or not isinstance(raw_deleted, list):
            raise RecordError("'keys' and 'deleted' must be lists")
        if len(raw_keys) + len(raw_deleted) > MAX_KEYS:
            raise RecordError(f"more than {MAX_KEYS} keys")
        if (
            not isinstance(offset, (int, float))
            or isinstance(offset, bool)
            or not math.isfinite(offset)
            or abs(offset) > MAX_CLOCK_OFFSET
        ):
            raise RecordError("'clock_offset' must be a number of seconds")
        keys = [key_from_record(record) for record in raw_keys]
        deleted = [deleted_from_record(record) for record in raw_deleted]
        names = [k.versions[0].name.lower() for k in keys]
        names += [d.versions[0].name.lower() for d in deleted]
        if len(set(names)) != len(names):
            raise RecordError("a key name appears twice")
        return keys, deleted, float(offset)

    def save(self, store: KeyStore) -> None:
        """Write the store's current state unless a write already covered it."""
        self.saved_through(store, None)

    def saved_through(self, store: KeyStore, generation: int | None) -> None:
        """Return once the file holds ``generation`` (None: the latest). Writers queue on
        one lock; one write covers every change made before its snapshot, so concurrent
        requests share writes instead of each rewriting the file."""
        with self._lock:
            if generation is not None and self._saved >= generation:
                return
            snapshot = store.snapshot()
            document = {
                "type": FILE_TYPE,
                "version": FILE_VERSION,
                "clock_offset": store.clock.offset,
                "keys": [key_record(key) for key in snapshot.keys],
                "deleted": [deleted_record(key) for key in snapshot.deleted],
            }
            data = json.dumps(document, separators=(",", ":")).encode()
            with atomic_output(self.path) as handle:
                handle.write(data)
            self._saved = snapshot.generation
