"""Key-encryption keys in Azure Key Vault and Managed HSM.

::

    from envelope import Envelope
    from envelope.keyvault import KeyVaultKey

    inner = KeyVaultKey("https://contoso.vault.azure.net/keys/inner")
    outer = KeyVaultKey("https://contoso-hsm.managedhsm.azure.net/keys/outer")
    env = Envelope([inner, outer])

Without a credential, a key uses :class:`DefaultCredential` (``DefaultAzureCredential``,
TLS-only except managed-identity token requests on the host). See :class:`KeyVaultKey` for
the REST operations used, the version rule of ``can_unwrap``,
the credential and TLS defaults, and the time bound of a call.
"""

from ._credential import AsyncDefaultCredential, DefaultCredential
from ._key import KeyVaultKey

__all__ = ["AsyncDefaultCredential", "DefaultCredential", "KeyVaultKey"]
