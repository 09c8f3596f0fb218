"""The ``envelope`` command through real subprocesses: every command, files, directories of
mixed sizes, standard input and output, and every exit code with its one-line message."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import envelope
from envelope import LocalKey, inspect

from .conftest import (
    Keys,
    assert_one_line_error,
    clean_environment,
    envelope_command,
    files_under,
    run,
)

SUFFIX = ".envelope"


def test_version_in_one_place_and_both_entry_points():
    assert version("layered-envelope") == envelope.__version__
    script = Path(sys.executable).parent / "envelope"
    assert script.is_file(), "the console script is declared in pyproject"
    by_script = subprocess.run(
        [script, "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    by_module = run("--version")
    assert by_module.code == 0
    assert (
        by_script.stdout
        == by_module.stdout.decode()
        == f"envelope, version {version('layered-envelope')}\n"
    )


@pytest.mark.parametrize("args", [["--help"], []], ids=["--help", "bare"])
def test_help_lists_the_commands_and_the_exit_codes(args):
    result = run(*args)
    assert result.code == 0
    text = result.stdout.decode()
    for command in ("keygen", "encrypt", "decrypt", "inspect", "rewrap", "vault"):
        assert command in text
    for line in (
        "0  success",
        "1  integrity or format failure",
        "2  usage",
        "3  key access",
        "4  insecure transport",
    ):
        assert line in text


def test_keygen_writes_a_private_key_file_and_never_replaces_one(tmp_path):
    path = tmp_path / "k.key"
    result = run("keygen", path)
    assert result.code == 0, result
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = LocalKey.load(path)
    assert result.stdout.decode().strip() == key.key_id
    before = path.read_bytes()
    again = run("keygen", path)
    assert_one_line_error(again, 2, "exists", "never replaces")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]


def test_a_file_round_trip_with_a_context(tmp_path, keys: Keys):
    plain = tmp_path / "report.pdf"
    data = os.urandom(300_000)
    plain.write_bytes(data)
    result = run("encrypt", plain, *keys.args, "--context", "tenant=contoso", "-C", "a=b")
    assert result.code == 0, result
    assert result.stderr == ""  # a single file: nothing to say on success
    sealed = tmp_path / f"report.pdf{SUFFIX}"
    assert keys.envelope().decrypt(sealed.read_bytes(), {"tenant": "contoso", "a": "b"}) == data
    plain.unlink()
    result = run("decrypt", sealed, *keys.args, "-C", "tenant=contoso", "-C", "a=b")
    assert result.code == 0, result
    assert plain.read_bytes() == data
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600


def test_a_context_mismatch_names_the_keys_that_differ(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"hello")
    assert run("encrypt", plain, *keys.args, "-C", "tenant=contoso", "-C", "x=1").code == 0
    result = run(
        "decrypt", f"{plain}{SUFFIX}", "-o", tmp_path / "out", *keys.args, "-C", "tenant=fabrikam"
    )
    assert_one_line_error(result, 1, "'tenant' differs", "'x' present but not expected", "inspect")
    assert not (tmp_path / "out").exists()


def test_standard_input_to_standard_output(keys: Keys):
    data = os.urandom(150_000)
    sealed = run("encrypt", "-", "-o", "-", *keys.args, stdin=data)
    assert sealed.code == 0, sealed
    assert keys.envelope().decrypt(sealed.stdout) == data
    opened = run("decrypt", "-", "-o", "-", *keys.args, stdin=sealed.stdout)
    assert opened.code == 0, opened
    assert opened.stdout == data
    # Without -o, standard input goes to standard output.
    assert run("decrypt", "-", *keys.args, stdin=sealed.stdout).stdout == data


def test_standard_input_to_a_file_and_a_file_to_standard_output(tmp_path, keys: Keys):
    data = os.urandom(70_000)
    target = tmp_path / "from-stdin.envelope"
    assert run("encrypt", "-", "-o", target, *keys.args, stdin=data).code == 0
    opened = run("decrypt", target, "-o", "-", *keys.args)
    assert opened.code == 0
    assert opened.stdout == data


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_directory_of_mixed_sizes_is_mirrored_with_a_result_per_file(
    tmp_path, keys: Keys, tree, jobs: str
):
    root, contents = tree
    (root / "link.bin").symlink_to(root / "top0.bin")
    sealed_root = tmp_path / "sealed"
    result = run("encrypt", "-r", root, "-o", sealed_root, "-j", jobs, *keys.args)
    assert result.code == 0, result
    sealed = files_under(sealed_root)
    assert sorted(sealed) == sorted(name + SUFFIX for name in contents)
    assert (sealed_root / "empty").is_dir()
    for name in contents:
        assert f"encrypted {name} -> {sealed_root / name}{SUFFIX}" in result.lines
    assert "skipped link.bin (not a regular file)" in result.lines
    env = keys.envelope()
    for name, data in contents.items():
        assert env.decrypt(sealed[name + SUFFIX].read_bytes()) == data

    opened_root = tmp_path / "opened"
    result = run("decrypt", "-r", sealed_root, "-o", opened_root, "-j", jobs, *keys.args)
    assert result.code == 0, result
    opened = files_under(opened_root)
    assert sorted(opened) == sorted(contents)
    for name, data in contents.items():
        assert opened[name].read_bytes() == data
    assert len([line for line in result.lines if line.startswith("decrypted ")]) == len(contents)


def test_a_directory_by_default_goes_beside_it_and_quiet_says_nothing(tmp_path, keys: Keys, tree):
    root, contents = tree
    result = run("encrypt", "-r", root, "-q", *keys.args)
    assert result.code == 0
    assert result.stderr == ""
    assert sorted(files_under(tmp_path / f"tree{SUFFIX}")) == sorted(n + SUFFIX for n in contents)


def test_one_bad_file_in_a_directory_fails_alone(tmp_path, keys: Keys, tree):
    root, contents = tree
    sealed_root = tmp_path / "sealed"
    assert run("encrypt", "-r", root, "-o", sealed_root, "-q", *keys.args).code == 0
    victim = sealed_root / f"top0.bin{SUFFIX}"
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 1
    victim.write_bytes(raw)
    opened_root = tmp_path / "opened"
    result = run("decrypt", "-r", sealed_root, "-o", opened_root, "-j", "2", *keys.args)
    assert result.code == 1
    failures = [line for line in result.lines if line.startswith("envelope: ")]
    assert failures == [
        f"envelope: top0.bin{SUFFIX}: message authentication failed: the file is damaged or was "
        "tampered with; nothing was written"
    ]
    assert sorted(files_under(opened_root)) == sorted(n for n in contents if n != "top0.bin")


def test_an_existing_output_is_replaced_only_with_force(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"new")
    target = tmp_path / f"a.txt{SUFFIX}"
    target.write_bytes(b"precious")
    result = run("encrypt", plain, *keys.args)
    assert_one_line_error(result, 2, f"{target} exists; pass --force")
    assert target.read_bytes() == b"precious"
    assert run("encrypt", plain, "--force", *keys.args).code == 0
    assert keys.envelope().decrypt(target.read_bytes()) == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", target.name, "keys"]


def test_in_place_replaces_each_file_and_keeps_its_mode(tmp_path, keys: Keys, tree):
    root, contents = tree
    os.chmod(root / "top0.bin", 0o640)
    assert run("encrypt", "-r", "--in-place", root, "-q", *keys.args).code == 0
    assert sorted(files_under(root)) == sorted(contents)
    env = keys.envelope()
    for name, data in contents.items():
        assert env.decrypt((root / name).read_bytes()) == data
    assert stat.S_IMODE((root / "top0.bin").stat().st_mode) == 0o640
    assert run("decrypt", "-r", "--in-place", root, "-q", *keys.args).code == 0
    for name, data in contents.items():
        assert (root / name).read_bytes() == data
    # A decrypted plaintext is private, whatever the ciphertext's mode was.
    assert stat.S_IMODE((root / "top0.bin").stat().st_mode) == 0o600


def test_a_wrong_key_exits_3(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x")
    assert run("encrypt", plain, *keys.args).code == 0
    other = tmp_path / "other.key"
    LocalKey.generate().save(other)
    result = run(
        "decrypt",
        f"{plain}{SUFFIX}",
        "-o",
        "-",
        "-k",
        f"local:{keys.inner}",
        "-k",
        f"local:{other}",
    )
    assert_one_line_error(result, 3, "layer 1", "inspect")
    assert result.stdout == b""


def test_a_missing_or_exposed_key_file_exits_3(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x")
    missing = tmp_path / "missing.key"
    result = run("encrypt", plain, "-k", f"local:{missing}", "-k", f"local:{keys.outer}")
    assert_one_line_error(result, 3, str(missing), "does not exist", "envelope keygen")
    os.chmod(keys.inner, 0o644)
    result = run("encrypt", plain, *keys.args)
    assert_one_line_error(result, 3, "chmod 600")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "keys"]


def test_key_files_may_be_read_only_for_their_owner(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x")
    os.chmod(keys.inner, 0o400)
    assert run("encrypt", plain, *keys.args).code == 0
    os.chmod(keys.outer, 0o440)
    assert_one_line_error(run("encrypt", plain, "-f", *keys.args), 3, "group or others")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda raw: raw[:-1], id="truncated"),
        pytest.param(lambda raw: raw[:-17] + bytes([raw[-17] ^ 1]) + raw[-16:], id="flipped"),
        pytest.param(lambda raw: raw + b"\0", id="appended"),
    ],
)
def test_a_tampered_file_exits_1_and_leaves_nothing(tmp_path, keys: Keys, tamper):
    plain = tmp_path / "a.bin"
    plain.write_bytes(os.urandom(200_000))
    assert run("encrypt", plain, *keys.args).code == 0
    sealed = tmp_path / f"a.bin{SUFFIX}"
    sealed.write_bytes(tamper(sealed.read_bytes()))
    result = run("decrypt", sealed, "-o", tmp_path / "out.bin", *keys.args)
    assert_one_line_error(result, 1, "authentication failed", "nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", sealed.name, "keys"]


def test_not_an_envelope_exits_1(tmp_path, keys: Keys):
    junk = tmp_path / f"junk{SUFFIX}"
    junk.write_bytes(b"just some text, long enough to look like a header" * 3)
    assert_one_line_error(run("decrypt", junk, *keys.args), 1, "not an envelope message")
    assert_one_line_error(run("inspect", junk), 1, "not an envelope message")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["encrypt", "{plain}", "--bogus"], "No such option"),
        (["encrypt", "{plain}", "-k", "file.key", "-k", "local:x"], "expected local:PATH"),
        (["encrypt", "{plain}"], "no keys"),
        (["encrypt", "{plain}", "{keys}", "-C", "novalue"], "expected KEY=VALUE"),
        (["encrypt", "{tmp}", "{keys}"], "is a directory; pass -r"),
        (["encrypt", "{tmp}/nothing-here", "{keys}"], "No such file or directory"),
        (["encrypt", "{plain}", "-o", "{plain}", "{keys}"], "is the input; pass --in-place"),
        (["encrypt", "{plain}", "--in-place", "-o", "x", "{keys}"], "exclude each other"),
        (["decrypt", "{plain}", "{keys}"], "does not end in .envelope"),
        (["encrypt", "{plain}", "-c", "{tmp}/absent.toml"], "config file"),
        (["inspect", "{tmp}"], "is a directory"),
        (["rewrap"], "Missing argument"),
    ],
)
def test_usage_errors_exit_2_in_one_line(tmp_path, keys: Keys, args, fragment):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x")
    expanded = []
    for arg in args:
        if arg == "{keys}":
            expanded += keys.args
        else:
            expanded.append(arg.format(plain=plain, tmp=tmp_path))
    assert_one_line_error(run(*expanded), 2, fragment)


def test_debug_shows_the_traceback(tmp_path, keys: Keys):
    missing = tmp_path / "missing.key"
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x")
    result = run("encrypt", plain, "--debug", "-k", f"local:{missing}", "-k", f"local:{keys.outer}")
    assert result.code == 3
    assert "Traceback" in result.stderr
    assert "KeyAccessError" in result.stderr


def test_inspect_needs_no_key(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x" * 1000)
    assert run("encrypt", plain, *keys.args, "-C", "tenant=contoso").code == 0
    sealed = tmp_path / f"a.txt{SUFFIX}"
    ids = [LocalKey.load(keys.inner).key_id, LocalKey.load(keys.outer).key_id]
    result = run("inspect", sealed, "--json")
    assert result.code == 0, result
    info = json.loads(result.stdout)
    assert info["context"] == {"tenant": "contoso"}
    assert info["plaintext_length"] == 1000
    assert [layer["algorithm"] for layer in info["layers"]] == ["AES-256-GCM", "AES-256-OCB3"]
    assert [layer["keys"][0]["key_id"] for layer in info["layers"]] == ids
    text = run("inspect", sealed).stdout.decode()
    assert "tenant=contoso" in text
    assert all(key_id in text for key_id in ids)
    from_stdin = run("inspect", "-", "--json", stdin=sealed.read_bytes())
    assert json.loads(from_stdin.stdout)["layers"] == info["layers"]


def test_rewrap_a_file_and_a_directory_resumably(tmp_path, keys: Keys, tree):
    root, contents = tree
    assert run("encrypt", "-r", "--in-place", root, "-q", *keys.args).code == 0
    single = root / "top0.bin"
    new_outer = tmp_path / "keys" / "new-outer.key"
    LocalKey.generate().save(new_outer)
    bridge = ["-k", f"local:{keys.inner}", "-k", f"local:{new_outer},local:{keys.outer}"]
    new_id = LocalKey.load(new_outer).key_id
    old_id = LocalKey.load(keys.outer).key_id

    result = run("rewrap", single, *bridge)
    assert result.code == 0, result
    assert inspect(single).layers[1].key_ids == (new_id, old_id)
    result = run("rewrap", root, *bridge)
    assert result.code == 0, result
    assert f"already rewrapped {single.name}" in result.lines
    assert (
        len([line for line in result.lines if line.startswith("rewrapped ")]) == len(contents) - 1
    )

    # Once every file names the new key, the old one can go.
    only_new = ["-k", f"local:{keys.inner}", "-k", f"local:{new_outer}"]
    assert run("rewrap", root, "-q", "-j", "2", *only_new).code == 0
    env = envelope.Envelope([LocalKey.load(keys.inner), LocalKey.load(new_outer)])
    for name, data in contents.items():
        assert inspect(root / name).layers[1].key_ids == (new_id,)
        assert env.decrypt((root / name).read_bytes()) == data
    assert sorted(files_under(root)) == sorted(contents)


def test_rewrap_without_a_key_that_unwraps_exits_3_and_changes_nothing(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x")
    assert run("encrypt", plain, *keys.args).code == 0
    sealed = tmp_path / f"a.txt{SUFFIX}"
    before = sealed.read_bytes()
    other = tmp_path / "other.key"
    LocalKey.generate().save(other)
    result = run("rewrap", sealed, "-k", f"local:{keys.inner}", "-k", f"local:{other}")
    assert_one_line_error(result, 3, "layer 1")
    assert sealed.read_bytes() == before


def test_a_config_file_names_the_layers(tmp_path, keys: Keys):
    config = tmp_path / "keys" / "envelope.toml"
    config.write_text(
        "[[layers]]\n"
        'keys = ["local:inner.key"]\n'
        'algorithm = "AES-256-GCM-SIV"\n'
        "[[layers]]\n"
        'keys = ["local:outer.key"]\n'
        'algorithm = "AES-256-GCM"\n'
        "[context]\n"
        'team = "payments"\n'
    )
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"configured")
    result = run("encrypt", plain, "--config", config, cwd=tmp_path)
    assert result.code == 0, result
    sealed = tmp_path / f"a.txt{SUFFIX}"
    info = inspect(sealed)
    assert dict(info.context) == {"team": "payments"}
    assert [layer.algorithm for layer in info.layers] == ["AES-256-GCM-SIV", "AES-256-GCM"]
    opened = run("decrypt", sealed, "-o", "-", env={"ENVELOPE_CONFIG": str(config)})
    assert opened.stdout == b"configured"
    config.write_text('[[layers]]\nkeys = ["local:inner.key"]\n[extra]\n')
    assert_one_line_error(run("encrypt", plain, "-f", "-c", config), 2, "unknown setting 'extra'")


def test_key_vault_keys_round_trip_and_a_foreign_ca_exits_4(tmp_path, vault, fresh):
    vault.create_key("cli-inner", "RSA")
    vault.create_key("cli-outer", "oct-HSM")
    identity = vault.identity()
    env = {
        "ENVELOPE_CA_FILE": vault.ca_file,
        "AZURE_AUTHORITY_HOST": vault.url,
        "AZURE_TENANT_ID": vault.tenant_id,
        "AZURE_CLIENT_ID": identity.client_id,
        "AZURE_CLIENT_SECRET": identity.client_secret,
    }
    args = ["-k", f"{vault.url}/keys/cli-inner", "-k", f"{vault.url}/keys/cli-outer"]
    data = os.urandom(100_000)
    sealed = run("encrypt", "-", "-o", "-", *args, stdin=data, env=env)
    assert sealed.code == 0, sealed
    assert run("decrypt", "-", *args, stdin=sealed.stdout, env=env).stdout == data

    foreign = {**env, "ENVELOPE_CA_FILE": _foreign_ca(tmp_path)}
    result = run("decrypt", "-", *args, stdin=sealed.stdout, env=foreign)
    assert_one_line_error(result, 4, "TLS policy", "certificate")


def _foreign_ca(tmp_path: Path) -> str:
    import trustme

    path = tmp_path / "foreign-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_the_vault_command_serves_until_interrupted(tmp_path, keys: Keys):
    process = subprocess.Popen(
        [*envelope_command(), "vault", "--key", "inner:RSA", "--key", "outer:oct-HSM"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environment(),
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().decode().strip() for _ in range(8)]
        settings = dict(line.split("=", 1) for line in lines)
        assert sorted(settings) == sorted(
            [
                "ENVELOPE_VAULT_URL",
                "ENVELOPE_CA_FILE",
                "AZURE_AUTHORITY_HOST",
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
                "AZURE_CLIENT_SECRET",
                "ENVELOPE_KEY_INNER",
                "ENVELOPE_KEY_OUTER",
            ]
        )
        assert settings["ENVELOPE_VAULT_URL"].startswith("https://127.0.0.1:")
        assert Path(settings["ENVELOPE_CA_FILE"]).is_file()
        args = ["-k", settings["ENVELOPE_KEY_INNER"], "-k", settings["ENVELOPE_KEY_OUTER"]]
        sealed = run("encrypt", "-", "-o", "-", *args, stdin=b"offline", env=settings)
        assert sealed.code == 0, sealed
        assert run("decrypt", "-", *args, stdin=sealed.stdout, env=settings).stdout == b"offline"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert not Path(settings["ENVELOPE_CA_FILE"]).exists()


def _on_a_terminal(*args: str | os.PathLike[str]) -> str:
    """Run the command with standard error on a pseudo-terminal; returns what it showed."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*envelope_command(), *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=clean_environment({"COLUMNS": "120"}),
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0
    return shown.decode(errors="replace")


def test_progress_bars_only_on_a_terminal(tmp_path, keys: Keys, tree):
    plain = tmp_path / "big.bin"
    plain.write_bytes(os.urandom(8 << 20))
    text = _on_a_terminal("encrypt", plain, *keys.args)
    assert "encrypting" in text
    assert "MB" in text  # bytes done and total
    assert "/s" in text  # the rate
    root, contents = tree
    text = _on_a_terminal("encrypt", "-r", root, "-o", tmp_path / "sealed", *keys.args)
    assert f"/{len(contents)} files" in text
    # Not a terminal, or -q: not a byte on standard error.
    assert run("encrypt", plain, "-f", *keys.args).stderr == ""
    assert _on_a_terminal("encrypt", plain, "-f", "-q", *keys.args) == ""


def test_a_hidden_leftover_of_a_crash_is_removed_by_the_next_replacement(tmp_path, keys: Keys):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"x")
    assert run("encrypt", plain, *keys.args).code == 0
    sealed = tmp_path / f"a.txt{SUFFIX}"
    leftover = tmp_path / f".{sealed.name}.{'ab' * 8}.envelope-tmp"
    leftover.write_bytes(sealed.read_bytes())
    unrelated = tmp_path / ".notes.envelope-tmp"
    unrelated.write_bytes(b"not ours")
    assert run("rewrap", tmp_path / f"a.txt{SUFFIX}", *keys.args).code == 0
    assert not leftover.exists()
    assert unrelated.exists()
    leftover.write_bytes(b"partial")
    assert run("encrypt", plain, "--force", *keys.args).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.txt", sealed.name, "keys", unrelated.name]
    )
