"""Test helpers: a local Azure Key Vault over real TLS, for offline tests and development.

``LocalKeyVault`` speaks the Key Vault keys REST API, and the Microsoft identity platform's
client-credentials flow, for the unmodified ``azure-keyvault-keys`` and ``azure-identity``
packages (and Microsoft's other Key Vault SDKs). Run one from a shell with
``python -m envelope.testing.keyvault``; run azure-keyvault-keys' own live tests against it
with ``python -m envelope.testing.azure_sdk_tests``.
``Azurite`` runs the Azure Storage emulator (installed with npm) over HTTPS on loopback, for
``envelope.blob``.
"""

from ._azurite import Azurite
from ._faults import Fault
from ._identity import Identity
from ._vault import LocalKeyVault

__all__ = ["Azurite", "Fault", "Identity", "LocalKeyVault"]
