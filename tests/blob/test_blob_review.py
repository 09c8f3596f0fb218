"""Security review of envelope.blob (issue 13): attacks by someone who can write the storage
account but holds no keys, against Azurite. Each found a flaw and is kept as the proof of its
fix, its assertion stating the behaviour now required."""

from __future__ import annotations

import io
import itertools
import os
import resource
import string
import tracemalloc
from typing import Any

import pytest
from azure.storage.blob import BlobBlock, BlobClient

from envelope import DecryptionError
from envelope._buffers import LAZY_OUTPUT_BYTES
from envelope.blob import ACCOUNT_KEY, CONTAINER_KEY, NAME_KEY, EncryptedBlobClient, _layout
from envelope.blob._layout import HEADER_READ

from ..conftest import run_threads
from .conftest import (
    BLOCK,
    CHUNK,
    SEALED,
    F,
    Recorder,
    Rotation,
    client,
    header_and_body,
    restage,
    sparse_page_blob,
    split,
    stage_raw,
    written,
)


def _rewrap_within(encrypted: EncryptedBlobClient, seconds: float) -> list[BaseException]:
    """Rewrap on a thread; fail the test if it has not returned within ``seconds``. Returns
    what it raised."""
    return run_threads(1, lambda n: encrypted.rewrap(), timeout=seconds)[1]


# -- rewrap: block ids chosen by the attacker ------------------------------------------------


def test_rewrap_of_one_character_block_ids_ends_and_keeps_the_body(container) -> None:
    """The attacker re-stages a valid blob's own bytes under the 16 one-character block ids
    0-9a-f (the blob still decrypts). ``header_block_id`` looked for a free id of that length
    among the 16 hex digits for ever: rewrap (and ``envelope rewrap-blobs``) spun at 100% CPU.
    Now the search is bounded and draws from 64 symbols: the rewrap is header-only, with a
    one-character header id, and the body blocks stay as they were."""
    keys = Rotation()
    encrypted, data, header, body = written(container, keys.old, 4 * BLOCK + 100)
    blob = encrypted.blob_client
    ids = [format(n, "x") for n in range(16)]
    restage(blob, ids, [header, *split(body, 15)])
    assert encrypted.download() == data  # the attacker broke nothing a reader sees
    before = blob.get_block_list("committed")[0]

    assert _rewrap_within(client(container, keys.bridge, blob.blob_name), 15) == []
    after = blob.get_block_list("committed")[0]
    assert [(b.id, b.size) for b in after[1:]] == [(b.id, b.size) for b in before[1:]]
    assert len(after[0].id) == 1
    assert after[0].id not in ids
    assert client(container, keys.new, blob.blob_name).download() == data


def test_rewrap_when_the_blobs_ids_leave_none_free_rewrites_it(container) -> None:
    """The attacker takes every one-character id of the 64 symbols a new header id of that
    length is drawn from. No id is free: the rewrap rewrites the blob in this library's
    layout (bounded, a block at a time) instead of searching, and the next rewrap is
    header-only again."""
    keys = Rotation()
    encrypted, data, header, body = written(container, keys.old, 20 * BLOCK)
    blob = encrypted.blob_client
    ids = list(string.ascii_letters + string.digits + "-_")
    restage(blob, ids, [header, *split(body, len(ids) - 1)])
    assert len(blob.get_block_list("committed")[0]) == 64

    assert _rewrap_within(client(container, keys.bridge, blob.blob_name), 60) == []
    after = blob.get_block_list("committed")[0]
    assert {len(b.id) for b in after} == {29}  # this library's ids
    assert header_and_body(blob)[1] == body
    assert client(container, keys.new, blob.blob_name).download() == data
    reader = client(container, keys.new, blob.blob_name)
    recorder = Recorder(reader.blob_client)
    reader.rewrap()
    assert recorder.staged == [blob.get_block_list("committed")[0][0].size]
    assert all(length is not None and length <= HEADER_READ for length in recorder.lengths)


@pytest.mark.parametrize(
    "raw_ids",
    [
        [bytes([0xFF, 0xFE, 0, n]) for n in range(8)],
        [bytes([0x80 + n]) * 4 for n in range(8)],
        ["éé".encode(), *[("é" + chr(0xE0 + n)).encode() for n in range(7)]],
    ],
    ids=["not UTF-8", "continuation bytes only", "UTF-8 beyond ASCII"],
)
def test_rewrap_of_block_ids_beyond_ascii(container, raw_ids: list[bytes]) -> None:
    """Ids that are not UTF-8 are listed by the SDK as their base64 text (it cannot decode
    them), which it would encode again when naming them back: the rewrap must not commit a
    list of blocks that do not exist, nor fail with a bare ``UnicodeDecodeError``. Such a
    blob is rewritten in this library's layout; ids that are UTF-8 beyond ASCII keep the
    header-only rewrap, with a new id as many bytes long."""
    keys = Rotation()
    encrypted, data, header, body = written(container, keys.old, 6 * BLOCK + 5)
    blob = encrypted.blob_client
    stage_raw(blob, raw_ids, [header, *split(body, len(raw_ids) - 1)])
    assert encrypted.download() == data

    assert _rewrap_within(client(container, keys.bridge, blob.blob_name), 30) == []
    assert client(container, keys.new, blob.blob_name).download() == data
    after = blob.get_block_list("committed")[0]
    if all(_is_utf8(raw) for raw in raw_ids):
        assert [b.id.encode() for b in after[1:]] == raw_ids[1:]
        assert len(after[0].id.encode()) == len(raw_ids[0])
    else:
        assert {len(b.id) for b in after} == {29}


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("length", [1, 2, 3, 8, 29, 64])
def test_a_header_block_id_is_found_in_bounded_time(length: int) -> None:
    symbols = string.ascii_letters + string.digits + "-_"
    every_id = itertools.product(symbols, repeat=length)
    crowded = ["".join(p) for p in itertools.islice(every_id, 50_000)]
    new_id = _layout.header_block_id(crowded)
    if len(symbols) ** length <= 50_000:
        assert new_id is None  # every id of that length made of those symbols is taken
    else:
        assert new_id is not None
        assert len(new_id.encode()) == length
        assert new_id not in crowded
    assert _layout.header_block_id(["a", "bb"]) is None  # ids of two lengths: not reusable
    assert _layout.header_block_id([]) is not None


# -- rewrap: a blob whose header shares a block -------------------------------------------------


def test_rewrap_of_a_large_blob_whose_blocks_were_regrouped_holds_a_few_blocks(
    container,
) -> None:
    """The attacker re-stages a large valid blob with its header and first body block in one
    block (the blob still decrypts; a blob uploaded by any other tool looks the same).
    ``rewrap`` took the "small blob written in one piece" path for a blob of any size: the
    whole blob downloaded into memory, then copied, then uploaded; with tens of GiB (up to
    190 TiB is possible) the rewrap, or the CLI running 8 of them, ran out of memory. Now
    the body is copied into this library's layout a block at a time, at most
    ``max_concurrency`` blocks at once: memory stays a few blocks whatever the blob's size,
    and the next rewrap is header-only."""
    keys = Rotation()
    # A header block and 257 body blocks.
    encrypted, data, header, body = written(container, keys.old, 256 * BLOCK + 100)
    blob = encrypted.blob_client
    committed = blob.get_block_list("committed")[0]
    ids = [block.id for block in committed]
    first_body = committed[1].size
    blob.stage_block("z" * len(ids[0]), header + body[:first_body])
    blob.commit_block_list([BlobBlock("z" * len(ids[0]))] + [BlobBlock(i) for i in ids[2:]])
    assert encrypted.download() == data
    whole = blob.get_blob_properties().size

    bridge = client(container, keys.bridge, blob.blob_name, max_concurrency=4)
    recorder = Recorder(bridge.blob_client)
    tracemalloc.start()
    try:
        bridge.rewrap()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(length is not None for length in recorder.lengths)  # never the whole blob
    assert max(length or 0 for length in recorder.lengths) <= max(HEADER_READ, CHUNK)
    assert recorder.most_in_flight <= 4
    assert max(recorder.staged) <= CHUNK
    # A few blocks, the block list and the clients' own buffers; not the blob.
    assert peak < whole // 2, f"rewrap held {peak} bytes for a {whole}-byte blob"

    assert client(container, keys.new, blob.blob_name).download() == data
    assert header_and_body(blob)[1] == body
    again = client(container, keys.new, blob.blob_name)
    recorder = Recorder(again.blob_client)
    again.rewrap()
    assert recorder.staged == [blob.get_block_list("committed")[0][0].size]
    assert sum(length or 0 for length in recorder.lengths) <= HEADER_READ


def test_a_rewrite_that_would_need_too_many_blocks_is_refused() -> None:
    with pytest.raises(ValueError, match="larger block_size"):
        _layout.rewrite_plan(1000, 1000 + 50_000 * CHUNK, CHUNK)
    assert len(_layout.rewrite_plan(1000, 1000 + 49_999 * CHUNK, CHUNK).body) == 49_999


# -- download: a length the storage claims ------------------------------------------------------


def test_download_proves_the_length_before_allocating_it(container, envelope, tmp_path) -> None:
    """``download()`` allocated a buffer of the whole claimed plaintext
    (``bytearray(size)``, zero-filled) before it verified a single frame: a ``MemoryError``
    here (the address space is capped for the test), the OOM killer on a host that
    overcommits, or tens of GiB really touched for a claim under the RAM size. The final
    frame is now opened first: its flag and index prove the length, and here it fails, so
    a ``DecryptionError`` comes before any allocation; ``download_to`` writes nothing."""
    encrypted = sparse_page_blob(container, envelope)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    # Room for everything a verifying download needs, far from what the blob claims.
    resource.setrlimit(resource.RLIMIT_AS, (used + 8 * 2**30, hard))
    try:
        with pytest.raises(DecryptionError):
            encrypted.download()
        with pytest.raises(DecryptionError):
            encrypted.download(offset=2**39)
        sink = io.BytesIO()
        with pytest.raises(DecryptionError):
            encrypted.download_to(sink)
        assert sink.getvalue() == b""
        with pytest.raises(DecryptionError):
            encrypted.download_to(tmp_path / "out")
        assert list(tmp_path.iterdir()) == []
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_download_to_a_stream_releases_nothing_of_a_blob_cut_short(container, envelope) -> None:
    """The final frame comes first, so a cut or extended blob fails before ``download_to``
    writes a byte, even to a stream it cannot cut back."""

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.written = 0

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.written += len(data)
            return len(data)

    encrypted, _, header, body = written(container, envelope, 6 * BLOCK + 100)
    blob = encrypted.blob_client
    for cut in (header + body[: 5 * CHUNK], header + body + os.urandom(SEALED)):
        blob.upload_blob(cut, overwrite=True)
        sink = Unseekable()
        with pytest.raises(DecryptionError):
            encrypted.download_to(sink)
        assert sink.written == 0


def test_a_large_output_is_written_whole_or_wiped() -> None:
    """``buffer_output`` hands out a large buffer without zeroing it first: a sink that
    leaves any byte unwritten is a failure, and the buffer is wiped."""
    size = 2 * LAZY_OUTPUT_BYTES
    with pytest.raises(DecryptionError), _layout.buffer_output(size, 0) as (out, sink):
        sink(memoryview(b"\x01" * (size - 1)))
    assert out == bytes(size)
    with _layout.buffer_output(size, 3) as (whole, sink):
        sink(memoryview(b"\x02" * (size + 3)))
    assert whole == b"\x02" * size


# -- ranged reads of a truncated blob -------------------------------------------------------


def test_a_range_past_a_truncated_end_is_a_decryption_error(container, envelope) -> None:
    """The attacker cuts a blob inside a frame so the shorter body still has a length a
    writer could make. A ranged read of bytes that lay past the cut was refused as the
    caller's mistake (``ValueError: offset must be 0 to N``), with no integrity failure.
    An offset past the claimed end now makes the final frame prove that end first: here it
    fails."""
    encrypted, data, header, body = written(container, envelope, 4 * BLOCK + 100)
    blob = encrypted.blob_client
    blob.upload_blob(header + body[: 2 * SEALED + 100], overwrite=True)
    for offset, length in ((3 * F, 10), (3 * F, None), (len(data), 0), (10**12, 1)):
        with pytest.raises(DecryptionError):
            encrypted.download(offset=offset, length=length)


def test_a_range_past_the_end_of_an_intact_blob_is_the_callers_mistake(container, envelope) -> None:
    encrypted = client(container, envelope)
    data = os.urandom(2 * BLOCK + 100)
    encrypted.upload(data)
    for offset in (len(data) + 1, len(data) + F, 10**12):
        with pytest.raises(ValueError, match=f"offset must be 0 to {len(data)}"):
            encrypted.download(offset=offset, length=1)
    assert encrypted.download(offset=len(data), length=5) == b""
    assert encrypted.download(offset=len(data) - 1, length=5) == data[-1:]
    wrong: list[tuple[Any, Any]] = [(-1, 1), (0, -1), (1.5, 1), (0, "1")]
    for offset, length in wrong:
        with pytest.raises(ValueError):
            encrypted.download(offset=offset, length=length)


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
