"""Key-encryption keys in Azure Key Vault and Managed HSM.

::

    from envelope import Envelope
    from envelope.keyvault import KeyVaultKey

    inner = KeyVaultKey("https://contoso.vault.azure.net/keys/inner")
    outer = KeyVaultKey("https://contoso-hsm.managedhsm.azure.net/keys/outer")
    env = Envelope([inner, outer])

See :class:`KeyVaultKey` for the REST operations used, the version rule of ``can_unwrap``,
the credential and TLS defaults, and the time bound of a call.
"""

from ._key import KeyVaultKey

__all__ = ["KeyVaultKey"]
