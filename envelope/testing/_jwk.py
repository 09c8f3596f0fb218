"""Key material of the vault and its JSON Web Key form: generation, export, import.

Every JWK the vault answers is exact: RSA ``n`` is the modulus length with no leading zero
byte, EC ``x``/``y``/``d`` have the curve's fixed coordinate length. Imported, restored and
persisted keys are read by one parser that treats its input as hostile: every field is
type-checked and length-bounded before use, and the private and public halves must agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._errors import bad_parameter
from ._identity import b64url_decode, b64url_encode

__all__ = [
    "ALL_KEY_OPS",
    "AES_SIZES",
    "CURVES",
    "KEY_TYPES",
    "RSA_SIZES",
    "KeyMaterial",
    "RecordError",
    "check_key_ops",
    "generate_material",
    "parse_jwk",
]

RSA_SIZES = frozenset({2048, 3072, 4096})
AES_SIZES = frozenset({128, 192, 256})
# Key Vault's curve names, cryptography's curves and the fixed octet length of a coordinate.
CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
    "P-256K": (ec.SECP256K1, 32),
}
CURVE_BY_SIZE = {256: "P-256", 384: "P-384", 521: "P-521"}
RSA_TYPES = frozenset({"RSA", "RSA-HSM"})
EC_TYPES = frozenset({"EC", "EC-HSM"})
OCT_TYPES = frozenset({"oct", "oct-HSM"})
KEY_TYPES = RSA_TYPES | EC_TYPES | OCT_TYPES
DEFAULT_OPS = {
    "RSA": ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"),
    "EC": ("sign", "verify"),
    "oct": ("encrypt", "decrypt", "wrapKey", "unwrapKey"),
}
ALL_KEY_OPS = frozenset(DEFAULT_OPS["RSA"]) | {"import", "export"}
# The exponents cryptography generates; imported keys may carry any odd one below 2**32.
GENERATED_EXPONENTS = frozenset({3, 65537})
MAX_RSA_FIELD_BYTES = 4096 // 8 + 1


class RecordError(ValueError):
    """Key material or a stored record that cannot be accepted; the message says why."""


def check_key_ops(ops: Any) -> tuple[str, ...]:
    if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
        raise bad_parameter("The parameter 'key_ops' must be a list of strings.")
    unknown = set(ops) - ALL_KEY_OPS
    if unknown:
        raise bad_parameter(f"Unknown key operations: {', '.join(sorted(unknown))}.")
    return tuple(dict.fromkeys(ops))


def _family(kty: str) -> str:
    return kty.removesuffix("-HSM")


def _uint(value: int, length: int | None = None) -> str:
    """Base64urlUInt: the minimum octets, or exactly ``length`` octets (EC coordinates)."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(size, "big"))


@dataclass(frozen=True)
class KeyMaterial:
    """One key's secret: an RSA or EC private key, or the bytes of an AES key."""

    kty: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None
    secret: bytes | None = None
    crv: str | None = None

    @property
    def family(self) -> str:
        return _family(self.kty)

    @property
    def size(self) -> int:
        if self.private is not None:
            return self.private.key_size
        assert self.secret is not None
        return len(self.secret) * 8

    @property
    def default_ops(self) -> tuple[str, ...]:
        return DEFAULT_OPS[self.family]

    def public_jwk(self) -> dict[str, Any]:
        """What the service returns: public parts only; symmetric keys carry no ``k``."""
        if isinstance(self.private, rsa.RSAPrivateKey):
            numbers = self.private.public_key().public_numbers()
            return {"n": _uint(numbers.n, (self.private.key_size + 7) // 8), "e": _uint(numbers.e)}
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            assert self.crv is not None
            point = self.private.public_key().public_numbers()
            length = CURVES[self.crv][1]
            return {"crv": self.crv, "x": _uint(point.x, length), "y": _uint(point.y, length)}
        return {}

    def private_jwk(self) -> dict[str, Any]:
        """The whole key, for backups and the vault file; read back by :func:`parse_jwk`."""
        jwk: dict[str, Any] = {"kty": self.kty, **self.public_jwk()}
        if isinstance(self.private, rsa.RSAPrivateKey):
            numbers = self.private.private_numbers()
            jwk.update(
                d=_uint(numbers.d),
                p=_uint(numbers.p),
                q=_uint(numbers.q),
                dp=_uint(numbers.dmp1),
                dq=_uint(numbers.dmq1),
                qi=_uint(numbers.iqmp),
            )
        elif isinstance(self.private, ec.EllipticCurvePrivateKey):
            assert self.crv is not None
            jwk["d"] = _uint(self.private.private_numbers().private_value, CURVES[self.crv][1])
        else:
            assert self.secret is not None
            jwk["k"] = b64url_encode(self.secret)
        return jwk


def generate_material(
    kty: Any, size: int | None, curve: Any, public_exponent: int | None
) -> KeyMaterial:
    """New key material for a create request; slow for big RSA keys, so callers run it
    outside any lock."""
    if not isinstance(kty, str) or kty not in KEY_TYPES:
        raise bad_parameter(f"Key type {kty!r} is not supported by the local Key Vault.")
    family = _family(kty)
    if public_exponent is not None and family != "RSA":
        raise bad_parameter("The parameter 'public_exponent' is for RSA keys only.")
    if curve is not None and family != "EC":
        raise bad_parameter("The parameter 'crv' is for EC keys only.")
    if family == "RSA":
        bits = 2048 if size is None else size
        if bits not in RSA_SIZES:
            raise bad_parameter(f"RSA key size must be one of {sorted(RSA_SIZES)}.")
        exponent = 65537 if public_exponent is None else public_exponent
        if exponent not in GENERATED_EXPONENTS:
            raise bad_parameter(
                "The local Key Vault generates RSA keys with public exponent 65537 (or 3)."
            )
        private = rsa.generate_private_key(public_exponent=exponent, key_size=bits)
        return KeyMaterial(kty, private)
    if family == "EC":
        if curve is None:
            curve = "P-256" if size is None else CURVE_BY_SIZE.get(size)
        if not isinstance(curve, str) or curve not in CURVES:
            raise bad_parameter(f"The curve must be one of {', '.join(CURVES)}.")
        if size is not None and CURVE_BY_SIZE.get(size) != curve:
            raise bad_parameter(f"Key size {size} does not match curve {curve}.")
        return KeyMaterial(kty, ec.generate_private_key(CURVES[curve][0]()), crv=curve)
    bits = 256 if size is None else size
    if bits not in AES_SIZES:
        raise bad_parameter(f"{kty} key size must be one of {sorted(AES_SIZES)}.")
    return KeyMaterial(kty, None, secret=os.urandom(bits // 8))


def _octets(jwk: Mapping[str, Any], name: str, limit: int) -> bytes:
    raw = jwk.get(name)
    if raw is None:
        raise RecordError(f"the key lacks '{name}'")
    if not isinstance(raw, str) or len(raw) > (limit * 4 + 2) // 3 + 4:
        raise RecordError(f"'{name}' must be a base64url string of at most {limit} bytes")
    try:
        value = b64url_decode(raw)
    except ValueError:
        raise RecordError(f"'{name}' is not valid base64url") from None
    if not value or len(value) > limit:
        raise RecordError(f"'{name}' must be 1 to {limit} bytes")
    return value


def _integer(jwk: Mapping[str, Any], name: str, limit: int) -> int:
    return int.from_bytes(_octets(jwk, name, limit), "big")


def _rsa(jwk: Mapping[str, Any], kty: str) -> KeyMaterial:
    n = _integer(jwk, "n", MAX_RSA_FIELD_BYTES)
    if n.bit_length() not in RSA_SIZES:
        raise RecordError(f"an RSA modulus must have {sorted(RSA_SIZES)} bits")
    e = _integer(jwk, "e", 4)
    if "d" not in jwk:
        raise RecordError("the key has no private part ('d'); import needs the whole key")
    d = _integer(jwk, "d", MAX_RSA_FIELD_BYTES)
    p = _integer(jwk, "p", MAX_RSA_FIELD_BYTES)
    q = _integer(jwk, "q", MAX_RSA_FIELD_BYTES)
    if p * q != n or e < 3 or e % 2 == 0:
        raise RecordError("the RSA key is inconsistent (p*q != n, or a bad exponent)")
    crt = {
        "dp": rsa.rsa_crt_dmp1(d, p),
        "dq": rsa.rsa_crt_dmq1(d, q),
        "qi": rsa.rsa_crt_iqmp(p, q),
    }
    for name, expected in crt.items():
        if name in jwk and _integer(jwk, name, MAX_RSA_FIELD_BYTES) != expected:
            raise RecordError(f"the RSA key is inconsistent ('{name}' does not match)")
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, crt["dp"], crt["dq"], crt["qi"], rsa.RSAPublicNumbers(e, n)
    )
    try:
        return KeyMaterial(kty, numbers.private_key())
    except ValueError:
        raise RecordError("the RSA key is inconsistent") from None


def _ec(jwk: Mapping[str, Any], kty: str) -> KeyMaterial:
    curve = jwk.get("crv")
    if not isinstance(curve, str) or curve not in CURVES:
        raise RecordError(f"'crv' must be one of {', '.join(CURVES)}")
    curve_class, length = CURVES[curve]
    x, y = _integer(jwk, "x", length), _integer(jwk, "y", length)
    if "d" not in jwk:
        raise RecordError("the key has no private part ('d'); import needs the whole key")
    d = _integer(jwk, "d", length)
    try:
        private = ec.derive_private_key(d, curve_class())
    except ValueError:
        raise RecordError("'d' is not a valid private value for the curve") from None
    point = private.public_key().public_numbers()
    if (point.x, point.y) != (x, y):
        raise RecordError("the EC key is inconsistent: 'x'/'y' are not the point of 'd'")
    return KeyMaterial(kty, private, crv=curve)


def parse_jwk(jwk: Any, *, hsm: bool = False) -> KeyMaterial:
    """Key material from a private JWK of base64url strings. ``hsm`` stores an RSA, EC or
    oct key as its -HSM type, as the service does for an import with ``"Hsm": true``."""
    if not isinstance(jwk, Mapping):
        raise RecordError("the key must be a JSON object")
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in KEY_TYPES:
        raise RecordError(f"'kty' must be one of {', '.join(sorted(KEY_TYPES))}")
    if hsm and not kty.endswith("-HSM"):
        kty = f"{kty}-HSM"
    family = _family(kty)
    if family == "RSA":
        return _rsa(jwk, kty)
    if family == "EC":
        return _ec(jwk, kty)
    secret = _octets(jwk, "k", 32)
    if len(secret) * 8 not in AES_SIZES:
        raise RecordError(f"'k' must be an AES key of {sorted(AES_SIZES)} bits")
    return KeyMaterial(kty, None, secret=secret)
