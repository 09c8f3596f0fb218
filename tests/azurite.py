"""The Azurite of the tests: ``envelope.testing.Azurite``; without the emulator installed the
tests fail (they are not optional), saying how to install it."""

from __future__ import annotations

import pytest

from envelope.testing import Azurite
from envelope.testing._azurite import ACCOUNT, ACCOUNT_KEY, AzuriteNotFound

__all__ = ["ACCOUNT", "ACCOUNT_KEY", "Azurite", "start_azurite"]


def start_azurite() -> Azurite:
    try:
        return Azurite()
    except AzuriteNotFound as exc:
        pytest.fail(str(exc))
