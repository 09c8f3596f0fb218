"""The public surface is deliberate: adding or removing a name is a visible change."""

import envelope


def test_public_names_are_pinned():
    assert sorted(envelope.__all__) == sorted(
        [
            "CacheStats",
            "DataKeyCache",
            "DecryptionError",
            "Envelope",
            "EnvelopeError",
            "FormatError",
            "InsecureTransportError",
            "KeyAccessError",
            "KeyEncryptionKey",
            "LayerInfo",
            "LocalKey",
            "MessageInfo",
            "UnwrapCache",
            "WrappedKey",
            "inspect",
        ]
    )
    for name in envelope.__all__:
        assert hasattr(envelope, name), name


def test_error_tree():
    assert issubclass(envelope.FormatError, envelope.DecryptionError)
    for error in (
        envelope.DecryptionError,
        envelope.KeyAccessError,
        envelope.InsecureTransportError,
    ):
        assert issubclass(error, envelope.EnvelopeError)


def test_package_is_typed():
    from importlib.resources import files

    assert files("envelope").joinpath("py.typed").is_file()
