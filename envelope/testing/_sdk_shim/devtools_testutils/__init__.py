"""A stand-in for the parts of ``devtools_testutils`` (the Azure SDK repository's test
helpers, not published on PyPI) that azure-keyvault-keys' tests use, in live mode with no
recording: no test proxy, sanitizers or matchers, and credentials of the local Key Vault.

Clients and credentials trust the local vaults' CA and take their token from the vault's own
identity endpoint; both come from the environment that the recipe's pytest plugin sets.
"""

from __future__ import annotations

import functools
import inspect
import os
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "AzureMgmtPreparer",
    "AzureRecordedTestCase",
    "add_general_regex_sanitizer",
    "add_general_string_sanitizer",
    "add_oauth_response_sanitizer",
    "is_live",
    "recorded_by_proxy",
    "remove_batch_sanitizers",
    "set_bodiless_matcher",
    "set_custom_default_matcher",
]

F = TypeVar("F", bound=Callable[..., Any])
AUTHORITY = "LOCAL_KEYVAULT_AUTHORITY"
CA_FILE = "LOCAL_KEYVAULT_CA_FILE"


def is_live() -> bool:
    return os.environ.get("AZURE_TEST_RUN_LIVE", "").lower() in ("true", "yes", "1")


def _no_recording(*args: Any, **kwargs: Any) -> None:
    """Sanitizers and matchers configure the recording proxy; there is none."""


add_general_string_sanitizer = _no_recording
add_general_regex_sanitizer = _no_recording
add_oauth_response_sanitizer = _no_recording
remove_batch_sanitizers = _no_recording
set_custom_default_matcher = _no_recording
set_bodiless_matcher = _no_recording


def _accepted(func: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``func`` takes (all of them if it has ``**kwargs``)."""
    parameters = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return kwargs
    names = {p.name for p in parameters}
    return {name: value for name, value in kwargs.items() if name in names}


def recorded_by_proxy(test: F) -> F:
    """Live without recording: call the test itself."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        return test(*args, **_accepted(test, kwargs))

    return run  # type: ignore[return-value]


def _resource_name(prefix: str) -> str:
    # One name per test and parameter set, stable across runs, as the real helper makes.
    test_id = os.environ.get("PYTEST_CURRENT_TEST", "").encode()
    return f"{prefix}{zlib.adler32(test_id) & 0xFFFFFFFF:x}"


class AzureRecordedTestCase:
    """Base class of the keys tests: live mode, local credentials, test-scoped names."""

    @property
    def is_live(self) -> bool:
        return is_live()

    @property
    def in_recording(self) -> bool:
        return self.is_live

    def is_playback(self) -> bool:
        return not self.is_live

    def get_credential(self, client_class: Any, **kwargs: Any) -> Any:
        is_async = kwargs.pop("is_async", False)
        if is_async:
            from azure.identity.aio import ClientSecretCredential  # noqa: PLC0415
        else:
            from azure.identity import ClientSecretCredential  # type: ignore[assignment]  # noqa: PLC0415
        return ClientSecretCredential(
            tenant_id=os.environ["AZURE_TENANT_ID"],
            client_id=os.environ["AZURE_CLIENT_ID"],
            client_secret=os.environ["AZURE_CLIENT_SECRET"],
            authority=os.environ[AUTHORITY],
            disable_instance_discovery=True,
            connection_verify=os.environ[CA_FILE],
            **kwargs,
        )

    def create_client_from_credential(
        self, client_class: Any, credential: Any, **kwargs: Any
    ) -> Any:
        kwargs.setdefault("logging_enable", True)
        kwargs.setdefault("connection_verify", os.environ[CA_FILE])
        return client_class(credential=credential, **kwargs)

    def create_random_name(self, name: str) -> str:
        return _resource_name(name)

    def get_resource_name(self, name: str) -> str:
        return self.create_random_name(name)

    def sleep(self, seconds: float) -> None:
        import time  # noqa: PLC0415

        time.sleep(seconds)


class AzureMgmtPreparer:
    """Only subclassed by a preparer that the keys tests import and never use."""

    def __init__(self, name_prefix: str = "", random_name_length: int = 0, **kwargs: Any) -> None:
        self.name_prefix = name_prefix
        self.client_kwargs = kwargs.pop("client_kwargs", {})
        self.is_live = is_live()
