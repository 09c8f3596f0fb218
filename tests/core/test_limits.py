# mypy: allow-untyped-defs, allow-incomplete-defs
"""Each limit is defined once, in ``envelope._limits``, with the value FORMAT.md section 6 or
RECORDS.md section 7 gives it, and what a KEK returns is held to the same limits as what a
header may carry."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import envelope
from envelope import Envelope, LocalKey, WrappedKey
from envelope import _limits as limits

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(envelope.__file__).resolve().parent


def _spec_limits(document: str, heading: str) -> dict[str, int]:
    text = (ROOT / "docs" / document).read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([0-9^]+) \|", section, flags=re.MULTILINE)
    assert rows, f"{document} has no limits table under {heading!r}"
    values = {}
    for name, value in rows:
        base, _, exponent = value.partition("^")
        values[name] = int(base) ** int(exponent) if exponent else int(base)
    return values


def test_limits_module_is_the_spec_tables():
    messages = _spec_limits("FORMAT.md", "## 6. Limits")
    records = _spec_limits("RECORDS.md", "## 7. Limits")
    assert not set(messages) & set(records), "a limit is named in both documents"
    spec = {**messages, **records}
    assert sorted(limits.__all__) == sorted(spec)
    assert {name: getattr(limits, name) for name in limits.__all__} == spec


def test_no_other_module_defines_a_limit():
    names = set(limits.__all__)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_limits.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names:
                    offenders.append(f"{path.relative_to(PACKAGE)}: {target.id}")
    assert offenders == []


class Returns:
    """A KEK that wraps with a LocalKey, then hands back what a test makes of the result."""

    def __init__(self, change: Callable[[WrappedKey], WrappedKey]) -> None:
        self._key = LocalKey.generate()
        self._change = change

    @property
    def key_id(self) -> str:
        return self._key.key_id

    def can_unwrap(self, key_id: str) -> bool:
        return True

    def wrap_key(self, data_key: bytes) -> WrappedKey:
        return self._change(self._key.wrap_key(data_key))

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        return self._key.unwrap_key(wrapped)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda w: w._replace(ciphertext=bytes(limits.MAX_WRAPPED_KEY_BYTES + 1)), "1025 bytes"),
        (lambda w: w._replace(ciphertext=b""), "0 bytes"),
        (lambda w: w._replace(key_id="k" * (limits.MAX_KEY_ID_BYTES + 1)), "key id"),
        (lambda w: w._replace(key_id=""), "key id"),
    ],
)
def test_a_kek_returning_what_no_header_can_hold_is_named(change, complaint):
    kek = Returns(change)
    env = Envelope([kek])
    with pytest.raises(ValueError, match=complaint) as caught:
        env.encrypt(b"x")
    assert repr(kek.key_id) in str(caught.value)


def test_the_largest_wrapped_key_a_header_holds_round_trips():
    size = limits.MAX_WRAPPED_KEY_BYTES

    class Padded(Returns):
        def unwrap_key(self, wrapped: WrappedKey) -> bytes:
            assert len(wrapped.ciphertext) == size
            return self._key.unwrap_key(wrapped._replace(ciphertext=wrapped.ciphertext[:60]))

    kek = Padded(lambda w: w._replace(ciphertext=w.ciphertext + bytes(size - 60)))
    env = Envelope([kek])
    assert env.decrypt(env.encrypt(b"largest")) == b"largest"
