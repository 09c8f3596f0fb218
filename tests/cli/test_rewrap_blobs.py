"""``envelope rewrap-blobs``: every blob under a container prefix rewrapped in place, the
header block only, concurrently and resumably, against Azurite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from envelope import Envelope, KeyAccessError, LocalKey
from envelope.blob import EncryptedBlobClient

from ..azurite import ACCOUNT_KEY, Azurite
from .conftest import Keys, assert_one_line_error, run

FRAME = 4096
BLOCK = 2 * FRAME


@pytest.fixture
def container(azurite: Azurite) -> Iterator[ContainerClient]:
    client = azurite.container()
    yield client
    client.close()


def environment(azurite: Azurite) -> dict[str, str]:
    return {"AZURE_STORAGE_KEY": ACCOUNT_KEY}


def upload(container: ContainerClient, envelope: Envelope, name: str, size: int) -> bytes:
    data = os.urandom(size)
    EncryptedBlobClient(container.get_blob_client(name), envelope, block_size=BLOCK).upload(data)
    return data


@pytest.fixture
def rotation(keys: Keys, tmp_path: Path) -> tuple[Envelope, Path]:
    """The envelope the blobs were written with, and a new outer key file."""
    old = Envelope([LocalKey.load(keys.inner), LocalKey.load(keys.outer)], frame_size=FRAME)
    new_key = tmp_path / "outer-2027.key"
    LocalKey.generate().save(new_key)
    return old, new_key


def committed(container: ContainerClient, name: str) -> list[tuple[str, int]]:
    blocks, _ = container.get_blob_client(name).get_block_list("committed")
    return [(b.id, b.size) for b in blocks]


def test_rewraps_every_blob_under_the_prefix_header_blocks_only(
    azurite: Azurite, container: ContainerClient, keys: Keys, rotation: tuple[Envelope, Path]
) -> None:
    old, new_key = rotation
    contents = {
        f"reports/{n:02d}.bin": upload(
            container, old, f"reports/{n:02d}.bin", n * 3001 + 5 * BLOCK % (n + 1)
        )
        for n in range(24)
    }
    outside = upload(container, old, "other/keep.bin", 3 * BLOCK)
    before = {name: committed(container, name) for name in contents}

    args = [
        "rewrap-blobs",
        f"{container.url}",
        "--prefix",
        "reports/",
        "--ca-file",
        azurite.ca_file,
    ]
    args += [
        "--key",
        f"local:{keys.inner}",
        "--key",
        f"local:{new_key},local:{keys.outer}",
        "-j",
        "6",
    ]
    result = run(*args, env=environment(azurite))
    assert result.code == 0, result.stderr
    assert sorted(result.lines) == sorted(f"rewrapped {name}" for name in contents)

    new = Envelope([LocalKey.load(keys.inner), LocalKey.load(new_key)], frame_size=FRAME)
    for name, data in contents.items():
        after = committed(container, name)
        if before[name]:  # written in blocks: the body blocks are the same ones
            assert after[1:] == before[name][1:]
            assert after[0] != before[name][0]
        assert EncryptedBlobClient(container.get_blob_client(name), new).download() == data
    # Outside the prefix nothing changed: the old keys alone still read it.
    assert (
        EncryptedBlobClient(container.get_blob_client("other/keep.bin"), old).download() == outside
    )

    # Run again: every blob is already done, and says so.
    again = run(*args, env=environment(azurite))
    assert again.code == 0, again.stderr
    assert sorted(again.lines) == sorted(f"already rewrapped {name}" for name in contents)


def test_resumes_after_an_interruption_and_reports_a_bad_blob(
    azurite: Azurite, container: ContainerClient, keys: Keys, rotation: tuple[Envelope, Path]
) -> None:
    old, new_key = rotation
    names = [f"p/{n}" for n in range(6)]
    for name in names:
        upload(container, old, name, 3 * BLOCK + 1)
    container.get_blob_client("p/not-a-message").upload_blob(b"plain text, not encrypted" * 20)
    # An earlier run got through half of them before it was stopped.
    bridge = Envelope(
        [LocalKey.load(keys.inner), [LocalKey.load(new_key), LocalKey.load(keys.outer)]],
        frame_size=FRAME,
    )
    for name in names[:3]:
        EncryptedBlobClient(container.get_blob_client(name), bridge).rewrap()

    result = run(
        "rewrap-blobs",
        container.url,
        "--prefix",
        "p/",
        "--ca-file",
        azurite.ca_file,
        "--key",
        f"local:{keys.inner}",
        "--key",
        f"local:{new_key},local:{keys.outer}",
        env=environment(azurite),
    )
    assert result.code == 1, result.stderr
    lines = sorted(result.lines)
    assert [line for line in lines if line.startswith("already")] == [
        f"already rewrapped {name}" for name in names[:3]
    ]
    assert [line for line in lines if line.startswith("rewrapped")] == [
        f"rewrapped {name}" for name in names[3:]
    ]
    failures = [line for line in lines if line.startswith("envelope: ")]
    assert len(failures) == 1
    assert "p/not-a-message" in failures[0]
    assert "not an envelope message" in failures[0]


def test_an_http_container_url_is_refused(keys: Keys) -> None:
    result = run(
        "rewrap-blobs",
        "http://127.0.0.1:1/devstoreaccount1/c",
        *keys.args,
        env={"AZURE_STORAGE_KEY": ACCOUNT_KEY},
    )
    assert_one_line_error(result, 4, "only https")


@pytest.mark.parametrize("key", [{"AZURE_STORAGE_KEY": ACCOUNT_KEY}, {}], ids=["key", "no key"])
def test_a_host_that_names_no_account_needs_the_account_name(
    keys: Keys, key: dict[str, str]
) -> None:
    """A custom domain does not say which account it serves: the blobs' binding (and an
    account key's credential) need it, so the run stops before any request, in one line."""
    result = run("rewrap-blobs", "https://files.contoso.invalid/c", *keys.args, env=key)
    assert_one_line_error(result, 2, "--account-name")


def test_an_account_name_that_contradicts_the_url_is_refused(
    azurite: Azurite, container: ContainerClient, keys: Keys, rotation: tuple[Envelope, Path]
) -> None:
    old, new_key = rotation
    data = upload(container, old, "acct/one.bin", 3 * BLOCK)
    before = committed(container, "acct/one.bin")
    new_keys = ["--key", f"local:{keys.inner}", "--key", f"local:{new_key},local:{keys.outer}"]
    common = ["--ca-file", azurite.ca_file, *new_keys]
    result = run(
        "rewrap-blobs",
        container.url,
        "--account-name",
        "fabrikam",
        *common,
        env=environment(azurite),
    )
    assert_one_line_error(result, 2, "names the account 'devstoreaccount1'")
    assert committed(container, "acct/one.bin") == before
    result = run("rewrap-blobs", container.url, "--account-name", "a.b", *common)
    assert_one_line_error(result, 2, "--account-name 'a.b' is not a storage account's name")
    # The same account in another case is the same account (and signs as Azure expects).
    result = run(
        "rewrap-blobs",
        container.url,
        *common,
        env={**environment(azurite), "AZURE_STORAGE_ACCOUNT": "DevStoreAccount1"},
    )
    assert result.code == 0, result.stderr
    assert result.lines == ["rewrapped acct/one.bin"]
    new = Envelope([LocalKey.load(keys.inner), LocalKey.load(new_key)], frame_size=FRAME)
    assert EncryptedBlobClient(container.get_blob_client("acct/one.bin"), new).download() == data


def test_the_old_keys_no_longer_open_a_rewrapped_blob(
    azurite: Azurite, container: ContainerClient, keys: Keys, rotation: tuple[Envelope, Path]
) -> None:
    old, new_key = rotation
    upload(container, old, "q/one", 2 * BLOCK)
    common = ["rewrap-blobs", container.url, "--prefix", "q/", "--ca-file", azurite.ca_file]
    bridge = ["--key", f"local:{keys.inner}", "--key", f"local:{new_key},local:{keys.outer}"]
    final = ["--key", f"local:{keys.inner}", "--key", f"local:{new_key}"]
    assert run(*common, *bridge, env=environment(azurite)).code == 0
    assert run(*common, *final, env=environment(azurite)).code == 0
    with pytest.raises(KeyAccessError):
        EncryptedBlobClient(container.get_blob_client("q/one"), old).download()
