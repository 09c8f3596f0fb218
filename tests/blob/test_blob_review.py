"""Security review of envelope.blob (issue 13): each ``test_flaw_*`` proves a flaw found by
attacking the client against Azurite as someone who can write the storage account but holds
no keys. They fail until the flaw is fixed."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from typing import Any

import pytest
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient

from envelope import DecryptionError, Envelope, EnvelopeError
from envelope.blob import ACCOUNT_KEY, CONTAINER_KEY, NAME_KEY, EncryptedBlobClient, _layout

from .conftest import blob_name

F = 4096  # the module envelope's frame size
BLOCK = 4 * F  # four frames per body block
SEALED = F + 2 * 16  # a sealed frame of the two-layer module envelope


def client(container: ContainerClient, envelope: Envelope, name: str | None = None, **options: Any):
    options.setdefault("block_size", BLOCK)
    return EncryptedBlobClient(container.get_blob_client(name or blob_name()), envelope, **options)


def _header_and_body(blob: BlobClient) -> tuple[bytes, bytes]:
    header_size = blob.get_block_list("committed")[0][0].size
    raw = blob.download_blob().readall()
    return raw[:header_size], raw[header_size:]


# -- rewrap: block ids chosen by the attacker ------------------------------------------------


def test_flaw_rewrap_hangs_on_one_character_block_ids(container, envelope, monkeypatch) -> None:
    """The attacker re-stages a valid blob's own bytes under the 16 one-character block ids
    0-9a-f (the blob still decrypts); ``header_block_id`` then looks for a free id of that
    length among the 16 hex digits for ever, and rewrap (and ``envelope rewrap-blobs``)
    spins at 100% CPU, never returning."""
    encrypted = client(container, envelope)
    data = os.urandom(4 * BLOCK + 100)
    encrypted.upload(data)
    blob = encrypted.blob_client
    header, body = _header_and_body(blob)
    ids = [format(n, "x") for n in range(16)]
    blob.stage_block(ids[0], header)
    step = -(-len(body) // 15)
    for n, start in enumerate(range(0, len(body), step), start=1):
        blob.stage_block(ids[n], body[start : start + step])
    blob.commit_block_list([BlobBlock(block_id) for block_id in ids])
    assert encrypted.download() == data  # the attacker broke nothing a reader sees

    outcome: list[BaseException | None] = []

    def rewrap() -> None:
        try:
            encrypted.rewrap()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=rewrap, daemon=True)
    worker.start()
    worker.join(15)
    hung = worker.is_alive()
    if hung:
        # Stop the spinning loop (it looks up secrets.token_hex each turn) before failing.
        class Stop(Exception):
            pass

        class Broken:
            @staticmethod
            def token_hex(n: int) -> str:
                raise Stop

        monkeypatch.setattr(_layout, "secrets", Broken)
        worker.join(10)
    assert not hung, "rewrap did not return within 15 s (busy loop in header_block_id)"
    # Fixed, it either rewraps or refuses with the library's own error.
    assert outcome
    assert outcome[0] is None or isinstance(outcome[0], EnvelopeError)


# -- rewrap: the whole-blob fallback -----------------------------------------------------------


def test_flaw_rewrap_downloads_a_whole_large_blob_whose_blocks_were_regrouped(
    container, envelope
) -> None:
    """The attacker re-stages a large valid blob with its header and first body block in one
    block (the blob still decrypts). ``rewrap`` no longer finds the header alone in block 0
    and falls back to the "small blob written in one piece" path for a blob of any size:
    the whole blob is downloaded into memory (then copied, then uploaded). With a blob of
    tens of GiB (up to 190 TiB is possible) the rewrap, or the CLI running 8 of them, is
    killed for lack of memory; with 4 MiB blocks nothing a writer of this library makes
    needs more than one block in memory."""
    encrypted = client(container, envelope)
    data = os.urandom(20 * BLOCK + 100)  # a header block and 21 body blocks
    encrypted.upload(data)
    blob = encrypted.blob_client
    header, body = _header_and_body(blob)
    committed = blob.get_block_list("committed")[0]
    ids = [block.id for block in committed]
    first_body = committed[1].size
    blob.stage_block("z" * len(ids[0]), header + body[:first_body])
    blob.commit_block_list([BlobBlock("z" * len(ids[0]))] + [BlobBlock(i) for i in ids[2:]])
    assert encrypted.download() == data

    whole = blob.get_blob_properties().size
    downloaded: list[int] = []
    download = blob.download_blob

    def recording(*args: Any, **kwargs: Any) -> Any:
        length = kwargs.get("length")
        downloaded.append(whole - (kwargs.get("offset") or 0) if length is None else length)
        return download(*args, **kwargs)

    blob.download_blob = recording  # type: ignore[method-assign]
    with contextlib.suppress(EnvelopeError):  # refusing such a blob is a fix too
        encrypted.rewrap()
    assert sum(downloaded) <= 16 * 1024 + 2 * BLOCK, (
        f"rewrap read {sum(downloaded)} bytes of a {whole}-byte blob into memory"
    )


# -- download: a length the storage claims ------------------------------------------------------


def test_flaw_download_allocates_the_length_the_storage_claims(container, envelope) -> None:
    """The attacker replaces a blob by a sparse page blob of 1 TiB (free to create) that
    starts with the blob's own header (so the binding and key ids check out). ``download()``
    allocates a buffer of the whole claimed plaintext (``bytearray(size)``, zero-filled)
    before it verifies a single frame: a ``MemoryError`` here (the address space is capped
    for the test), the OOM killer on a host that overcommits, or tens of GiB really touched
    for a claim under the RAM size. Frame 0 is zeros: a ``DecryptionError`` was due."""
    name = blob_name()
    encrypted = client(container, envelope, name)
    encrypted.upload(os.urandom(3 * BLOCK))
    blob = encrypted.blob_client
    header, _ = _header_and_body(blob)
    blob.delete_blob()
    size = 2**40
    while (size - len(header)) % SEALED < 32:
        size += 512
    blob.create_page_blob(size)
    page = header + bytes(-len(header) % 512)
    blob.upload_page(page, offset=0, length=len(page))
    assert blob.get_blob_properties().size == size

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    # Room for everything a verifying download needs, far from what the blob claims.
    resource.setrlimit(resource.RLIMIT_AS, (used + 8 * 2**30, hard))
    try:
        with pytest.raises(DecryptionError):
            encrypted.download()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# -- ranged reads of a truncated blob -------------------------------------------------------


def test_flaw_a_range_past_a_truncated_end_is_a_value_error(container, envelope) -> None:
    """The attacker cuts a blob inside a frame so the shorter body still has a length a
    writer could make. A ranged read of bytes that lay past the cut is refused as the
    caller's mistake (``ValueError: offset must be 0 to N``), with no integrity failure:
    the truncation goes unnoticed (an HTTP range server would answer 416). The final frame,
    which would prove the end, is never fetched."""
    encrypted = client(container, envelope)
    data = os.urandom(4 * BLOCK + 100)
    encrypted.upload(data)
    blob = encrypted.blob_client
    header, body = _header_and_body(blob)
    blob.upload_blob(header + body[: 2 * SEALED + 100], overwrite=True)
    with pytest.raises(DecryptionError):
        encrypted.download(offset=3 * F, length=10)


# -- the blob binding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bound"),
    [
        ("https://contoso.z12.blob.storage.azure.net/c/b", ("contoso", "c", "b")),
        ("https://contoso.z12.blob.storage.azure.net/c/dir/b", ("contoso", "c", "dir/b")),
        ("https://[::1]:10000/devstoreaccount1/c/dir/b", ("devstoreaccount1", "c", "dir/b")),
        ("https://localhost:10000/devstoreaccount1/c/b", ("devstoreaccount1", "c", "b")),
    ],
    ids=["dns zone", "dns zone, a name with a slash", "ipv6 path-style", "localhost path-style"],
)
def test_an_endpoint_without_core_in_its_name_binds_its_account(envelope, url, bound) -> None:
    """Azure's DNS-zone endpoints (``ACCOUNT.zNN.blob.storage.azure.net``) and an IPv6
    path-style URL gave a ``BlobClient`` on a token credential (``secure_blob_client``'s
    default) no ``account_name``: the binding put ``None`` in the context and every upload
    and download failed deep inside with a bare ``TypeError``. The account is now read from
    the URL; and the container and name too, which ``from_blob_url`` splits at the last
    ``/`` for such hosts (container ``dir``, name ``b``: another blob's name). No request is
    sent here."""
    blob = BlobClient.from_blob_url(url)
    encrypted = EncryptedBlobClient(blob, envelope)
    keys = (ACCOUNT_KEY, CONTAINER_KEY, NAME_KEY)
    assert encrypted.context() == dict(zip(keys, bound, strict=True))
    assert all(isinstance(value, str) for value in encrypted.context().values())


@pytest.mark.parametrize(
    "url",
    [
        "https://files.contoso.com/c/b",
        "https://blob.example/c/b",
        "https://[::1]:10000/not_an_account/c/b",
        "https://contoso.blob.core.windows.net.evil.example/c/b",
    ],
)
def test_a_host_that_names_no_account_is_refused_unless_it_is_given(envelope, url) -> None:
    """A custom domain (or a path-style URL whose first segment is no account name) does not
    say which account it serves: the client is refused when it is made, saying to pass the
    account; given, it is bound; a shared-key credential names it too. No request."""
    with pytest.raises(ValueError, match="account_name=") as caught:
        EncryptedBlobClient(BlobClient.from_blob_url(url), envelope)
    assert "TypeError" not in type(caught.value).__name__
    given = EncryptedBlobClient(BlobClient.from_blob_url(url), envelope, account_name="Contoso")
    assert given.context()[ACCOUNT_KEY] == "contoso"
    keyed = BlobClient.from_blob_url(
        url, credential={"account_name": "contoso", "account_key": "a2V5"}
    )
    assert EncryptedBlobClient(keyed, envelope).context()[ACCOUNT_KEY] == "contoso"
    # Unbound, the account is not needed.
    assert (
        EncryptedBlobClient(BlobClient.from_blob_url(url), envelope, bind_to_blob=False).context()
        == {}
    )


@pytest.mark.parametrize("name", ["", "ab", "a" * 25, "con_toso", "con.toso", 7, "contoso "])
def test_an_account_name_that_azure_would_not_allow_is_refused(envelope, name) -> None:
    blob = BlobClient.from_blob_url("https://files.contoso.com/c/b")
    with pytest.raises(ValueError, match="account_name must be"):
        EncryptedBlobClient(blob, envelope, account_name=name)


def test_an_account_name_that_contradicts_the_host_is_refused(envelope) -> None:
    blob = BlobClient.from_blob_url("https://contoso.blob.core.windows.net/c/b")
    with pytest.raises(ValueError, match="names the account 'contoso'"):
        EncryptedBlobClient(blob, envelope, account_name="fabrikam")
    same = EncryptedBlobClient(blob, envelope, account_name="CONTOSO")
    assert same.context()[ACCOUNT_KEY] == "contoso"


SPELLINGS = [
    "https://CONTOSO.blob.core.windows.net/c/b",
    "https://contoso.privatelink.blob.core.windows.net/c/b",
    "https://contoso-secondary.blob.core.windows.net/c/b",
    "https://contoso-ipv6.blob.core.windows.net/c/b",
    "https://contoso-secondary-dualstack.blob.core.windows.net/c/b",
    "https://contoso.blob.core.windows.net./c/b",
    "https://contoso.blob.core.windows.net:443/c/b",
    "https://contoso.z07.blob.storage.azure.net/c/b",
    "https://Contoso.Z07.PrivateLink.Blob.Storage.Azure.Net/c/b",
    "https://contoso.blob.core.windows.net/c/b?snapshot=2026-01-01T00:00:00.0000000Z",
]


@pytest.mark.parametrize("other", SPELLINGS)
def test_every_spelling_of_one_blob_binds_the_same_account(envelope, other) -> None:
    """The bound account was the URL's first host label as written: the same blob of the
    same account reached by a differently cased host name, or by its private-link name, got
    another context and did not decrypt ("envelope.blob.account differs"). Each spelling
    now binds the account's own name. No request is sent here."""
    one = "https://contoso.blob.core.windows.net/c/b"
    first = EncryptedBlobClient(BlobClient.from_blob_url(one), envelope)
    second = EncryptedBlobClient(BlobClient.from_blob_url(other), envelope)
    assert first.context() == second.context()
    assert first.context()[ACCOUNT_KEY] == "contoso"


@pytest.mark.parametrize(
    "other",
    [
        "https://contoso2.blob.core.windows.net/c/b",
        "https://contoso.blob.core.windows.net/c/B",
        "https://contoso.blob.core.windows.net/c2/b",
        "https://contoso.blob.core.windows.net/c/dir/b",
        "https://contoso.blob.core.windows.net/c/b%2F",
        "https://127.0.0.1:10000/contoso/c/dir/b",
    ],
)
def test_other_blobs_bind_other_contexts(envelope, other) -> None:
    one = "https://127.0.0.1:10000/contoso/c/b"
    first = EncryptedBlobClient(BlobClient.from_blob_url(one), envelope)
    second = EncryptedBlobClient(BlobClient.from_blob_url(other), envelope)
    assert first.context() != second.context()
