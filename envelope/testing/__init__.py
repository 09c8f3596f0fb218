"""Test helpers: a local Azure Key Vault over real TLS, for offline tests and development.

``LocalKeyVault`` speaks enough of the Key Vault keys REST API, and of the Microsoft identity
platform's client-credentials flow, for the unmodified ``azure-keyvault-keys`` and
``azure-identity`` packages. Run one from a shell with ``python -m envelope.testing.keyvault``.
``Azurite`` runs the Azure Storage emulator (installed with npm) over HTTPS on loopback, for
``envelope.blob``.
"""

from ._azurite import Azurite
from ._faults import Fault
from ._identity import Identity
from ._vault import LocalKeyVault

__all__ = ["Azurite", "Fault", "Identity", "LocalKeyVault"]
