"""What a command needs to build its envelope: the layers' key specs, from ``--key`` or a
TOML config file, the context, and the trust anchors for Key Vault.

A config file names the layers so that a team need not repeat the flags::

    # envelope.toml: layers innermost first
    frame_size = 65536                 # optional
    ca_file = "vault-ca.pem"           # optional: PEM trust anchors for Key Vault and identity

    [[layers]]
    keys = ["local:keys/inner.key"]    # alternates of one layer: any one can decrypt
    algorithm = "AES-256-GCM"          # optional

    [[layers]]
    keys = ["https://contoso.vault.azure.net/keys/outer"]

    [context]
    team = "payments"

Relative paths in a config file are relative to the file's directory. ``--key`` replaces
the config's layers; ``--context`` entries are added to the config's, replacing an entry of
the same key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import Envelope, KeyEncryptionKey, LocalKey
from .._limits import DEFAULT_FRAME_SIZE
from ._errors import CliError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["Recipe", "load_recipe", "parse_context"]

LOCAL_PREFIX = "local:"
_KEYVAULT_PREFIX = "https://"
_TOP_LEVEL = {"layers", "context", "frame_size", "ca_file"}
_LAYER_FIELDS = {"keys", "algorithm"}


@dataclass(frozen=True)
class Recipe:
    """How to build the envelope, as plain data: it crosses to worker processes, where each
    builds its own envelope (key files are read there again, Key Vault clients made anew)."""

    layers: tuple[tuple[str, ...], ...]
    algorithms: tuple[str, ...] | None = None
    frame_size: int = DEFAULT_FRAME_SIZE
    context: tuple[tuple[str, str], ...] = ()
    ca_file: str | None = None

    def build(self) -> Built:
        """The envelope, and what must be closed when done with it."""
        factory = _Keks(self.ca_file)
        try:
            layers = [[factory.kek(spec) for spec in layer] for layer in self.layers]
            envelope = Envelope(layers, algorithms=self.algorithms, frame_size=self.frame_size)
        except BaseException:
            _close_all(factory.closers)
            raise
        return Built(envelope, factory.remote, factory.closers)


class _Keks:
    """Makes the KEKs of one envelope; the Key Vault keys share one credential."""

    def __init__(self, ca_file: str | None) -> None:
        self.ca_file = ca_file
        self.closers: list[Callable[[], object]] = []
        self._remote: tuple[Any, Any] | None = None  # the TLS policy and the credential

    def kek(self, spec: str) -> KeyEncryptionKey:
        if spec.startswith(LOCAL_PREFIX):
            return LocalKey.load(spec[len(LOCAL_PREFIX) :])
        from ..keyvault import KeyVaultKey  # noqa: PLC0415 - the Azure SDK loads only when used

        policy, credential = self.remote()
        key = KeyVaultKey(spec, credential, tls_policy=policy)
        self.closers.append(key.close)
        return key

    def remote(self) -> tuple[Any, Any]:
        """The TLS policy of every remote service (``--ca-file``) and the credential of the
        environment's client secret (None: the library's default credential)."""
        if self._remote is None:
            policy = self._tls_policy()
            self._remote = (policy, self._credential(policy))
        return self._remote

    def _tls_policy(self) -> Any:
        from ..transport import TLSPolicy  # noqa: PLC0415

        if self.ca_file is None:
            return TLSPolicy()
        if not os.path.isfile(self.ca_file):
            raise CliError(f"CA file {self.ca_file} does not exist")
        return TLSPolicy(ca_file=self.ca_file)

    def _credential(self, policy: Any) -> Any:
        """A client-secret credential from ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID`` and
        ``AZURE_CLIENT_SECRET`` (and ``AZURE_AUTHORITY_HOST``) when they are set, over the
        TLS policy; otherwise None, and each key uses ``DefaultAzureCredential``."""
        values = [os.environ.get(name) for name in _SECRET_VARIABLES]
        if not all(values):
            return None
        from azure.identity import ClientSecretCredential  # noqa: PLC0415

        from ..keyvault._ids import is_loopback  # noqa: PLC0415
        from ..transport import SecureTransport, secure_client  # noqa: PLC0415

        http = secure_client(policy)
        options: dict[str, Any] = {"transport": SecureTransport(client=http)}
        authority = os.environ.get("AZURE_AUTHORITY_HOST")
        if authority:
            options["authority"] = authority
            # A local identity provider has nothing to discover, and discovery would ask
            # Microsoft's servers about it.
            host = urlsplit(authority).hostname or ""
            options["disable_instance_discovery"] = is_loopback(host)
        tenant, client_id, secret = (value or "" for value in values)
        credential = ClientSecretCredential(tenant, client_id, secret, **options)
        self.closers.extend([http.close, credential.close])
        return credential


_SECRET_VARIABLES = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")


@dataclass
class Built:
    envelope: Envelope
    #: The TLS policy and credential for remote services (Key Vault, storage), made on use.
    remote: Callable[[], tuple[Any, Any]]
    closers: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        _close_all(self.closers)


def _close_all(closers: Iterable[Callable[[], object]]) -> None:
    for close in reversed(list(closers)):
        try:
            close()
        except Exception:  # noqa: S112 - closing must not hide the command's own outcome
            continue


def load_recipe(
    keys: Sequence[str],
    config: str | None,
    context: Sequence[str],
    ca_file: str | None,
    *,
    need_keys: bool = True,
) -> Recipe:
    """The recipe from ``--key`` options, a config file and ``--context`` options."""
    document: dict[str, Any] = {}
    base = Path.cwd()
    if config is not None:
        document = _read_config(Path(config))
        base = Path(config).resolve().parent
    if keys:
        layers = tuple(_split(spec, "--key") for spec in keys)
        algorithms = None
    else:
        layers, algorithms = _config_layers(document, config, base)
    if need_keys and not layers:
        raise CliError(
            "no keys: give --key once per layer, innermost first (local:PATH or a Key Vault "
            "key id), or --config FILE naming the layers"
        )
    merged = dict(_config_context(document, config))
    merged.update(parse_context(context))
    frame_size = document.get("frame_size", DEFAULT_FRAME_SIZE)
    if not isinstance(frame_size, int) or isinstance(frame_size, bool):
        raise CliError(f"{config}: frame_size must be an integer")
    if ca_file is None and "ca_file" in document:
        ca = document["ca_file"]
        if not isinstance(ca, str):
            raise CliError(f"{config}: ca_file must be a string")
        ca_file = str(base / ca)
    return Recipe(
        layers=layers,
        algorithms=algorithms,
        frame_size=frame_size,
        context=tuple(sorted(merged.items())),
        ca_file=ca_file,
    )


def parse_context(entries: Sequence[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise CliError(f"--context {entry!r}: expected KEY=VALUE")
        if key in context:
            raise CliError(f"--context {key!r} is given twice")
        context[key] = value
    return context


def _split(spec: str, where: str, base: Path | None = None) -> tuple[str, ...]:
    """One layer's alternates, each checked for its shape (nothing is read yet)."""
    alternates = tuple(part.strip() for part in spec.split(","))
    checked = []
    for part in alternates:
        if part.startswith(LOCAL_PREFIX) and len(part) > len(LOCAL_PREFIX):
            path = part[len(LOCAL_PREFIX) :]
            if base is not None and not os.path.isabs(path):
                path = str(base / path)
            checked.append(LOCAL_PREFIX + path)
        elif part.startswith(_KEYVAULT_PREFIX) and "/keys/" in part:
            checked.append(part)
        else:
            raise CliError(
                f"{where} {part!r}: expected local:PATH or a Key Vault key id "
                "(https://VAULT/keys/NAME[/VERSION]); separate a layer's alternates with commas"
            )
    return tuple(checked)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            document: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError:
        raise CliError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise CliError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - _TOP_LEVEL)
    if unknown:
        raise CliError(f"{path}: unknown setting {unknown[0]!r} (known: {sorted(_TOP_LEVEL)})")
    return document


def _config_layers(
    document: dict[str, Any], config: str | None, base: Path
) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...] | None]:
    raw = document.get("layers", [])
    if not isinstance(raw, list) or not all(isinstance(layer, dict) for layer in raw):
        raise CliError(f"{config}: 'layers' must be an array of tables ([[layers]])")
    layers = []
    algorithms = []
    for index, layer in enumerate(raw):
        where = f"{config}: layers[{index}]"
        unknown = sorted(set(layer) - _LAYER_FIELDS)
        if unknown:
            raise CliError(f"{where}: unknown setting {unknown[0]!r}")
        keys = layer.get("keys")
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise CliError(f"{where}: 'keys' must be a non-empty list of key specs")
        layers.append(_split(",".join(keys), where, base))
        algorithm = layer.get("algorithm")
        if algorithm is not None and not isinstance(algorithm, str):
            raise CliError(f"{where}: 'algorithm' must be a string")
        algorithms.append(algorithm)
    if any(a is not None for a in algorithms):
        if not all(a is not None for a in algorithms):
            raise CliError(f"{config}: give an algorithm for every layer or for none")
        return tuple(layers), tuple(a for a in algorithms if a is not None)
    return tuple(layers), None


def _config_context(document: dict[str, Any], config: str | None) -> dict[str, str]:
    raw = document.get("context", {})
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise CliError(f"{config}: [context] must map keys to strings")
    return dict(raw)
