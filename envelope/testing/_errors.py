"""Error replies of the local Key Vault: an HTTP status with Key Vault's error code and text."""

from __future__ import annotations

from typing import Any

__all__ = [
    "VaultError",
    "bad_parameter",
    "conflict",
    "deleted_key_not_found",
    "forbidden",
    "key_not_found",
]


class VaultError(Exception):
    """An error response: HTTP status and the Key Vault error code and message."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner is not None:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def bad_parameter(message: str) -> VaultError:
    return VaultError(400, "BadParameter", message)


def forbidden(message: str, inner: str) -> VaultError:
    return VaultError(403, "Forbidden", message, inner)


def conflict(message: str) -> VaultError:
    return VaultError(409, "Conflict", message)


def key_not_found(name: str, version: str = "") -> VaultError:
    which = f"{name}/{version}" if version else name
    return VaultError(
        404,
        "KeyNotFound",
        f"A key with (name/id) {which} was not found in this key vault. If you recently "
        "deleted this key you may be able to recover it using the correct recovery command.",
    )


def deleted_key_not_found(name: str) -> VaultError:
    return VaultError(404, "KeyNotFound", f"Deleted Key not found: {name}")
