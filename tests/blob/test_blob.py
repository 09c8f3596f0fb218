"""envelope.blob against Azurite, through the TLS-only transport: round trips, ranged reads
at every frame edge, attacks on the stored blocks, and the header-only rewrap checked
against the committed block list."""

from __future__ import annotations

import importlib
import io
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.storage.blob import BlobClient

from envelope import (
    DecryptionError,
    Envelope,
    FormatError,
    InsecureTransportError,
    KeyAccessError,
    LocalKey,
)
from envelope.blob import (
    ACCOUNT_KEY,
    CONTAINER_KEY,
    NAME_KEY,
    EncryptedBlobClient,
    secure_blob_client,
    secure_container_client,
)
from envelope.blob._layout import HEADER_READ

from ..conftest import run_threads
from ..core.conftest import Counting
from .conftest import ATTACKS, BLOCK, Azurite, F, Recorder, Rotation, blob_name, client, edges

SIZES = [0, 1, F - 1, F, F + 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + F + 7, 1_000_003]


def test_public_surface() -> None:
    import envelope.blob
    import envelope.blob.aio

    # The pinned surface, as one line of names each.
    assert " ".join(envelope.blob.__all__) == (
        "ACCOUNT_KEY CONTAINER_KEY NAME_KEY EncryptedBlobClient OpenedBlob "
        "secure_blob_client secure_container_client"
    )
    assert " ".join(envelope.blob.aio.__all__) == (
        "EncryptedBlobClient secure_blob_client secure_container_client"
    )


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_from_bytes_and_from_a_stream(container, envelope, size) -> None:
    data = os.urandom(size)
    for source in (data, io.BytesIO(data)):
        encrypted = client(container, envelope)
        encrypted.upload(source, context={"tenant": "contoso"})
        assert encrypted.download(context={"tenant": "contoso"}) == data
        sink = io.BytesIO()
        assert encrypted.download_to(sink, context={"tenant": "contoso"}) == size
        assert sink.getvalue() == data


class Trickle:
    """A binary stream with only ``read``, which hands out at most ``step`` bytes at a time
    and ``None`` (nothing ready, as a non-blocking source says) where ``stalls`` says."""

    def __init__(self, data: bytes, step: int, stalls: tuple[int, ...] = ()) -> None:
        self._data, self._step, self._stalls = io.BytesIO(data), step, stalls
        self.reads = 0

    def read(self, size: int) -> bytes | None:
        self.reads += 1
        if self.reads in self._stalls:
            return None
        return self._data.read(min(size, self._step))


def test_a_stream_of_short_reads_round_trips(container, envelope) -> None:
    data = os.urandom(3 * BLOCK + F + 7)
    encrypted = client(container, envelope)
    encrypted.upload(Trickle(data, 1000))
    assert encrypted.download() == data


@pytest.mark.parametrize("stall", [1, 2, BLOCK // 1000 + 2])
def test_a_source_with_nothing_ready_fails_the_upload(container, envelope, stall) -> None:
    # Taking "nothing ready" for the end of the input would commit a truncated message as a
    # whole one: at the first read, within the first block, and at the read ahead.
    encrypted = client(container, envelope)
    with pytest.raises(BlockingIOError):
        encrypted.upload(Trickle(os.urandom(2 * BLOCK), 1000, (stall,)))
    assert not encrypted.blob_client.exists()


def test_layout_header_block_then_blocks_of_whole_frames(container, envelope) -> None:
    encrypted = client(container, envelope)
    size = 3 * BLOCK + F + 7
    encrypted.upload(os.urandom(size))
    committed, uncommitted = encrypted.blob_client.get_block_list("all")
    header_length = encrypted.open().header_length
    sealed = F + 2 * 16
    assert [b.size for b in committed] == [
        header_length,
        4 * sealed,
        4 * sealed,
        4 * sealed,
        sealed + 7 + 32,
    ]
    assert uncommitted == []
    assert len({len(b.id) for b in committed}) == 1  # Azure wants one id length per blob


def test_a_message_that_fits_one_block_is_written_in_one_piece(container, envelope) -> None:
    encrypted = client(container, envelope)
    recorder = Recorder(encrypted.blob_client)
    encrypted.upload(os.urandom(BLOCK - 1))
    assert recorder.puts == 1
    assert recorder.staged == []


def test_64_mib_round_trip_with_the_default_frames_and_blocks(container) -> None:
    envelope = Envelope([LocalKey.generate(), LocalKey.generate()])
    encrypted = EncryptedBlobClient(container.get_blob_client(blob_name()), envelope)
    data = os.urandom(64 * 1024 * 1024)
    encrypted.upload(io.BytesIO(data))
    assert encrypted.download() == data


def test_download_to_a_path_appears_only_when_verified(container, envelope, tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK + 5)
    encrypted = client(container, envelope)
    encrypted.upload(data)
    target = tmp_path / "out.bin"
    assert encrypted.download_to(target) == len(data)
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o600


def test_upload_never_replaces_an_existing_blob_unless_asked(container, envelope) -> None:
    for size in (10, 3 * BLOCK):
        encrypted = client(container, envelope)
        encrypted.upload(b"first" * 3)
        with pytest.raises(ResourceExistsError):
            encrypted.upload(os.urandom(size))
        assert encrypted.download() == b"first" * 3
        encrypted.upload(b"second", overwrite=True)
        assert encrypted.download() == b"second"


# -- ranged reads -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [5 * F, 5 * F + 100])
def test_ranged_reads_at_every_frame_edge_fetch_only_their_frames(
    container, envelope, size
) -> None:
    data = os.urandom(size)
    encrypted = client(container, envelope)
    encrypted.upload(data)
    opened = encrypted.open()
    recorder = Recorder(encrypted.blob_client)
    for offset in edges(size):
        for length in (0, 1, F + 1, None):
            recorder.downloads.clear()
            got = encrypted.download(offset=offset, length=length)
            end = size if length is None else min(size, offset + length)
            assert got == data[offset:end], (offset, length)
            frames = opened.body.frames(offset, end - offset)
            if end == size:  # the final frame, and its flag, whenever the range reaches the end
                assert frames.stop == opened.body.frame_count
            # The first read (16 KiB: the header, and the first frames of the body), then one
            # read of exactly the frames that hold the range unless the first read held them.
            start, stop = opened.body.body_span(frames)
            assert recorder.downloads[0] == (0, HEADER_READ)
            if stop == start or opened.header_length + stop <= HEADER_READ:
                assert recorder.downloads[1:] == []
            else:  # in ranges of a block at most, together exactly the frames' bytes
                reads = sorted((a or 0, n or 0) for a, n in recorder.downloads[1:])
                assert reads[0][0] == opened.header_length + start
                assert sum(length for _, length in reads) == stop - start
                assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(reads))
                assert all(n <= 4 * (F + 32) for _, n in reads)


def test_a_range_outside_the_plaintext_is_refused(container, envelope) -> None:
    encrypted = client(container, envelope)
    encrypted.upload(b"x" * 100)
    with pytest.raises(ValueError, match="offset"):
        encrypted.download(offset=101)
    with pytest.raises(ValueError, match="length"):
        encrypted.download(offset=0, length=-1)
    assert encrypted.download(offset=100) == b""
    assert encrypted.download(offset=90, length=1000) == b"x" * 10


# -- attacks: each raises DecryptionError and releases nothing ------------------------------


def _assert_releases_nothing(encrypted: EncryptedBlobClient, tmp_path: Path, **kwargs: Any) -> None:
    with pytest.raises(DecryptionError):
        encrypted.download(**kwargs)
    sink = io.BytesIO(b"kept")
    sink.seek(4)
    with pytest.raises(DecryptionError):
        encrypted.download_to(sink, **kwargs)
    assert sink.getvalue() == b"kept"  # cut back to where it stood
    target = tmp_path / "out"
    with pytest.raises(DecryptionError):
        encrypted.download_to(target, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("attack", ATTACKS, ids=str)
def test_attack_on_the_stored_blocks_is_detected(container, envelope, tmp_path, attack) -> None:
    size = 4 * BLOCK + 100  # a header block and five body blocks
    encrypted = client(container, envelope)
    encrypted.upload(os.urandom(size), context={"k": "v"})
    other = client(container, envelope)
    other.upload(os.urandom(size), context={"k": "v"})
    ATTACKS[attack](encrypted.blob_client, other.blob_client)
    _assert_releases_nothing(encrypted, tmp_path, context={"k": "v"})


def test_ranged_reads_of_a_truncated_blob_fail_where_the_end_is_claimed(
    container, envelope
) -> None:
    encrypted = client(container, envelope)
    data = os.urandom(4 * BLOCK + 100)
    encrypted.upload(data)
    ATTACKS["truncated to its full blocks"](encrypted.blob_client, encrypted.blob_client)
    # The body's length is no longer one a writer makes: every read fails before fetching.
    with pytest.raises(DecryptionError):
        encrypted.download(offset=0, length=1)


def test_a_blob_copied_to_another_name_does_not_decrypt(container, envelope, tmp_path) -> None:
    original = client(container, envelope)
    data = os.urandom(2 * BLOCK)
    original.upload(data)
    copy = client(container, envelope)
    copy.blob_client.upload_blob(original.blob_client.download_blob().readall())
    with pytest.raises(DecryptionError, match=r"envelope\.blob\.name"):
        copy.download()
    _assert_releases_nothing(copy, tmp_path)
    assert original.context() == {
        ACCOUNT_KEY: "devstoreaccount1",
        CONTAINER_KEY: container.container_name,
        NAME_KEY: original.blob_client.blob_name,
    }


def test_a_blob_in_another_container_does_not_decrypt(azurite: Azurite, envelope) -> None:
    with azurite.container() as first, azurite.container() as second:
        name = blob_name()
        original = client(first, envelope, name)
        original.upload(b"secret" * 1000)
        moved = client(second, envelope, name)
        moved.blob_client.upload_blob(original.blob_client.download_blob().readall())
        with pytest.raises(DecryptionError, match=r"envelope\.blob\.container"):
            moved.download()


def test_unbound_messages_may_move(container, envelope) -> None:
    original = client(container, envelope, bind_to_blob=False)
    original.upload(b"portable", context={"k": "v"})
    copy = client(container, envelope, bind_to_blob=False)
    copy.blob_client.upload_blob(original.blob_client.download_blob().readall())
    assert copy.download(context={"k": "v"}) == b"portable"
    assert copy.context({"k": "v"}) == {"k": "v"}


def test_the_reserved_context_keys_are_the_callers_to_avoid(container, envelope) -> None:
    encrypted = client(container, envelope)
    with pytest.raises(ValueError, match="reserved"):
        encrypted.upload(b"x", context={NAME_KEY: "other"})


def test_a_wrong_context_names_the_key(container, envelope) -> None:
    encrypted = client(container, envelope)
    encrypted.upload(b"x", context={"tenant": "a"})
    with pytest.raises(DecryptionError, match="'tenant' differs"):
        encrypted.download(context={"tenant": "b"})


@pytest.mark.parametrize("content", [b"", b"\x89ENV", b"not an envelope message at all" * 10])
def test_a_blob_that_is_not_a_message_is_a_format_error(container, envelope, content) -> None:
    encrypted = client(container, envelope)
    encrypted.blob_client.upload_blob(content)
    with pytest.raises(FormatError):
        encrypted.download()


def test_a_header_longer_than_the_first_read_is_read_in_two(container) -> None:
    # Eight KEKs per layer and long key ids make a header larger than the first read.
    layers = [[LocalKey.generate("i" * 1000 + str(n)) for n in range(8)] for _ in range(2)]
    layers[1] = [LocalKey.generate("o" * 1000 + str(n)) for n in range(8)]
    envelope = Envelope(layers, frame_size=4096)
    encrypted = client(container, envelope)
    data = os.urandom(5 * BLOCK)
    encrypted.upload(data)
    assert encrypted.open().header_length > 16 * 1024
    assert encrypted.download() == data
    encrypted.rewrap()
    assert encrypted.download(offset=BLOCK, length=3) == data[BLOCK : BLOCK + 3]


# -- rewrap -------------------------------------------------------------------------------


def test_rewrap_replaces_only_the_header_block(container) -> None:
    keys = Rotation()
    old = keys.old
    data = os.urandom(4 * BLOCK + 99)
    writer = client(container, old)
    writer.upload(data, context={"k": "v"})
    blob = writer.blob_client
    before = blob.get_block_list("committed")[0]
    body_before = blob.download_blob(offset=before[0].size).readall()

    bridge = client(container, keys.bridge, blob.blob_name)
    recorder = Recorder(bridge.blob_client)
    bridge.rewrap()

    after = blob.get_block_list("committed")[0]
    assert [(b.id, b.size) for b in after[1:]] == [(b.id, b.size) for b in before[1:]]
    assert after[0].id != before[0].id
    assert blob.download_blob(offset=after[0].size).readall() == body_before
    # Only the header was read and only the new header block was uploaded.
    assert all(length is not None and length <= 16 * 1024 for _, length in recorder.downloads)
    assert recorder.staged == [after[0].size]
    assert recorder.puts == 0
    # Once every blob names the new KEK, a rewrap without the old one drops it.
    reader = client(container, keys.new, blob.blob_name)
    reader.rewrap()
    assert reader.download(context={"k": "v"}) == data
    assert [(b.id, b.size) for b in blob.get_block_list("committed")[0][1:]] == [
        (b.id, b.size) for b in before[1:]
    ]
    with pytest.raises(KeyAccessError):
        client(container, old, blob.blob_name).download(context={"k": "v"})


@pytest.mark.parametrize("size", [4 * BLOCK + 99, 100])  # the header block alone; whole
def test_rewrap_from_a_public_wrap_to_a_vouching_key_is_refused(container, size) -> None:
    """``Counting`` does not say its wraps need a secret, so it counts as a public-key KEK:
    its data key could be anyone's choice, and a local key's wrap (which vouches) is refused;
    the blob is left as it was."""
    quiet, outer = Counting(), LocalKey.generate()
    data = os.urandom(size)
    writer = client(container, Envelope([quiet, outer], frame_size=F))
    writer.upload(data)
    blob = writer.blob_client
    before = (blob.get_block_list("committed")[0], blob.get_blob_properties().etag)
    vouching = Envelope([[LocalKey.generate(), quiet], outer], frame_size=F)
    with pytest.raises(KeyAccessError, match="public-key wrap"):
        client(container, vouching, blob.blob_name).rewrap()
    assert (blob.get_block_list("committed")[0], blob.get_blob_properties().etag) == before
    assert writer.download() == data


def test_rewrap_keeps_content_settings_and_metadata(container, envelope) -> None:
    from azure.storage.blob import ContentSettings

    encrypted = client(container, envelope)
    encrypted.upload(os.urandom(3 * BLOCK))
    blob = encrypted.blob_client
    blob.set_http_headers(
        ContentSettings(content_type="application/x-envelope", cache_control="no-store")
    )
    blob.set_blob_metadata({"owner": "payments"})
    encrypted.rewrap()
    properties = blob.get_blob_properties()
    assert properties.content_settings.content_type == "application/x-envelope"
    assert properties.content_settings.cache_control == "no-store"
    assert properties.metadata == {"owner": "payments"}


def test_a_small_blob_written_in_one_piece_is_rewritten_whole(container) -> None:
    keys = Rotation()
    writer = client(container, keys.old)
    writer.upload(b"small")
    name = writer.blob_client.blob_name
    client(container, keys.bridge, name).rewrap()
    assert client(container, keys.new, name).download() == b"small"


def test_rewrap_of_a_blob_changed_meanwhile_commits_nothing(container, envelope) -> None:
    encrypted = client(container, envelope)
    encrypted.upload(os.urandom(3 * BLOCK))
    blob = encrypted.blob_client
    list_blocks = blob.get_block_list

    def changed_meanwhile(*args: Any, **kwargs: Any) -> Any:
        result = list_blocks(*args, **kwargs)
        blob.set_blob_metadata({"changed": "yes"})  # a new ETag
        return result

    blob.get_block_list = changed_meanwhile  # type: ignore[method-assign]
    before = [b.id for b in list_blocks("committed")[0]]
    with pytest.raises(ResourceModifiedError):
        encrypted.rewrap()
    assert [b.id for b in list_blocks("committed")[0]] == before


def test_a_download_of_a_blob_changed_after_its_header_was_read_fails(
    container, envelope, monkeypatch
) -> None:
    # Every read after the header's (of the whole blob, or of a range beyond the first read)
    # is pinned to the ETag the header came with: no frame of another version is mixed in.
    data = os.urandom(3 * BLOCK)
    encrypted = client(container, envelope)
    encrypted.upload(data)
    blob = encrypted.blob_client
    download = blob.download_blob

    def changed_after_the_first(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(blob, "download_blob", download)
        result = download(*args, **kwargs)
        blob.set_blob_metadata({"changed": "yes"})  # a new ETag, the same bytes
        return result

    for offset, length in ((0, None), (2 * BLOCK, F)):
        monkeypatch.setattr(blob, "download_blob", changed_after_the_first)
        with pytest.raises(ResourceModifiedError):
            encrypted.download(offset=offset, length=length)
    assert encrypted.download() == data


# -- transport ------------------------------------------------------------------------------


def test_an_http_storage_url_is_refused_before_any_request(envelope, network_log) -> None:
    mark = network_log.mark()
    plain = BlobClient.from_blob_url("http://127.0.0.1:1/devstoreaccount1/c/b")
    with pytest.raises(InsecureTransportError) as caught:
        EncryptedBlobClient(plain, envelope)
    assert caught.value.reason == "plaintext"
    for helper in (secure_blob_client, secure_container_client):
        with pytest.raises(InsecureTransportError):
            helper(
                "http://127.0.0.1:1/devstoreaccount1/c",
                {"account_name": "a", "account_key": "a2V5"},
            )
    assert network_log.since(mark) == []


def test_the_helpers_refuse_what_would_bypass_the_policy(azurite: Azurite) -> None:
    with pytest.raises(TypeError, match="connection_verify"):
        secure_blob_client(f"{azurite.url}/c/b", azurite.credential, connection_verify=False)


@pytest.mark.parametrize(
    ("package", "transport", "credential"),
    [
        ("envelope.blob", "SecureTransport", "DefaultCredential"),
        ("envelope.blob.aio", "AsyncSecureTransport", "AsyncDefaultCredential"),
    ],
)
def test_a_refused_helper_call_opens_no_transport_or_credential(
    monkeypatch: pytest.MonkeyPatch, package: str, transport: str, credential: str
) -> None:
    # Each of them owns an HTTP client: made for a client that is then refused, it would be
    # left open, with no one to close it.
    import envelope.keyvault

    helpers = importlib.import_module(package)
    secure = importlib.import_module(f"{package}._secure")
    made: list[str] = []

    def counted(name: str) -> Callable[..., str]:
        def make(*args: Any, **kwargs: Any) -> str:
            made.append(name)
            return name

        return make

    monkeypatch.setattr(secure, transport, counted(transport))
    monkeypatch.setattr(envelope.keyvault, credential, counted(credential))
    for helper in (helpers.secure_blob_client, helpers.secure_container_client):
        with pytest.raises(InsecureTransportError):
            helper("http://127.0.0.1:1/devstoreaccount1/c")
        for bypass in ("transport", "connection_verify", "connection_cert"):
            with pytest.raises(TypeError, match=bypass):
                helper("https://127.0.0.1:1/devstoreaccount1/c", **{bypass: None})
    assert made == []
    # The same path, for a URL it accepts, does make them (the count above counts).
    options = secure.storage_options(
        "https://127.0.0.1:1/devstoreaccount1/c",
        None,
        None,
        {},
        make_transport=getattr(secure, transport),
        make_default_credential=secure._credential,
    )
    assert made == [credential, transport]
    assert (options["transport"], options["credential"]) == (transport, credential)


def test_a_server_outside_the_trusted_roots_is_refused(azurite: Azurite, envelope) -> None:
    # The default policy trusts certifi's roots, not Azurite's private CA.
    blob = secure_blob_client(f"{azurite.url}/c/b", azurite.credential, retry_total=0)
    with blob, pytest.raises(Exception) as caught:
        EncryptedBlobClient(blob, envelope).download()
    chain = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, InsecureTransportError) and e.reason == "certificate" for e in chain)


# -- concurrency ------------------------------------------------------------------------------


def test_many_threads_upload_and_download_at_once(container, envelope) -> None:
    def work(n: int) -> None:
        data = os.urandom(n * 997 % (BLOCK + BLOCK // 2))
        encrypted = client(container, envelope, max_concurrency=2)
        encrypted.upload(data, context={"n": str(n)})
        assert encrypted.download(context={"n": str(n)}) == data
        assert (
            encrypted.download(context={"n": str(n)}, offset=n % 7, length=5)
            == data[n % 7 : n % 7 + 5]
        )

    _, errors = run_threads(64, work)
    assert errors == []
