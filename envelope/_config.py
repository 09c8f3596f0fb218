"""An envelope's configuration, checked: the KEKs of each layer, one AEAD per layer, the
frame size and the caches. Every mistake here is the caller's: ``TypeError``/``ValueError``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ._format import Aead
from ._keys import KeyEncryptionKey
from ._limits import MAX_FRAME_SIZE, MAX_LAYERS, MAX_WRAPPED_KEYS, MIN_FRAME_SIZE

__all__ = ["LayerSpec", "check_frame_size", "check_optional", "layer_algorithms", "layer_keks"]

LayerSpec = KeyEncryptionKey | Sequence[KeyEncryptionKey]

#: Default AEAD per layer position: a different mode per layer as far as they go.
_DEFAULT_ALGORITHMS = (Aead.AES_256_GCM, Aead.AES_256_OCB3, Aead.AES_256_GCM_SIV)

_T = TypeVar("_T")


def layer_keks(layers: Sequence[LayerSpec]) -> tuple[tuple[KeyEncryptionKey, ...], ...]:
    """Each layer's KEKs, innermost first; no KEK may serve two layers (or one twice)."""
    if not isinstance(layers, Sequence):
        raise TypeError("layers must be a sequence of KEKs or of lists of KEKs")
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"an envelope has 1 to {MAX_LAYERS} layers")
    checked = tuple(_one_layer(spec, index) for index, spec in enumerate(layers))
    _refuse_shared_keks(checked)
    return checked


def layer_algorithms(algorithms: Sequence[str] | None, layers: int) -> tuple[Aead, ...]:
    """The AEAD of each layer: the caller's names, or a different default mode per layer."""
    if algorithms is None:
        return tuple(_DEFAULT_ALGORITHMS[i % len(_DEFAULT_ALGORITHMS)] for i in range(layers))
    if isinstance(algorithms, str) or len(algorithms) != layers:
        raise ValueError("give one algorithm name per layer")
    return tuple(Aead.from_label(name) for name in algorithms)


def check_frame_size(frame_size: int) -> int:
    if not isinstance(frame_size, int) or not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
        raise ValueError(f"frame_size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}")
    return frame_size


def check_optional(value: _T | None, kind: type[_T], name: str) -> _T | None:
    """``value`` if it is None or a ``kind``: a cache of the wrong kind is refused."""
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}")
    return value


def _one_layer(spec: LayerSpec, index: int) -> tuple[KeyEncryptionKey, ...]:
    given: object = spec  # checked at run time: callers may pass anything
    if isinstance(given, KeyEncryptionKey):
        keks: tuple[KeyEncryptionKey, ...] = (given,)
    elif isinstance(given, Sequence) and not isinstance(given, (str, bytes, bytearray)):
        keks = tuple(given)
    else:
        raise TypeError(f"layer {index}: expected a KEK or a list of KEKs")
    if not keks:
        raise ValueError(f"layer {index} has no key-encryption key")
    if len(keks) > MAX_WRAPPED_KEYS:
        raise ValueError(f"a layer has at most {MAX_WRAPPED_KEYS} key-encryption keys")
    for kek in keks:
        if not isinstance(kek, KeyEncryptionKey):
            raise TypeError(
                f"layer {index}: {type(kek).__name__} is not a key-encryption key "
                "(needs key_id, can_unwrap, wrap_key, unwrap_key)"
            )
    return keks


def _refuse_shared_keks(layers: Sequence[Sequence[KeyEncryptionKey]]) -> None:
    """The same KEK on two layers would make one key compromise open both."""
    owner: dict[str, int] = {}
    for index, layer in enumerate(layers):
        for kek in layer:
            previous = owner.get(kek.key_id)
            if previous is not None:
                where = "twice in" if previous == index else f"in layers {previous} and"
                raise ValueError(f"key {kek.key_id!r} is used {where} layer {index}")
            owner[kek.key_id] = index
    flat = [kek for layer in layers for kek in layer]
    for i, a in enumerate(flat):
        for b in flat[i + 1 :]:
            if a is b or a.can_unwrap(b.key_id) or b.can_unwrap(a.key_id):
                raise ValueError(f"keys {a.key_id!r} and {b.key_id!r} are the same key")
