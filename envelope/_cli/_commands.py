"""The ``envelope`` command and its subcommands."""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import LocalKey, MessageInfo, __version__, inspect
from .._files import is_temporary
from ._config import Built, load_recipe
from ._errors import CliError, ExitCode
from ._progress import make_reporter
from ._work import Job, Task, remove_leftovers, run

__all__ = ["cli"]

#: The name an encrypted file gets: the plaintext's name and this suffix.
SUFFIX = ".envelope"

F = TypeVar("F", bound=Callable[..., Any])


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        # Worker processes inherit it: they print their tracebacks too.
        os.environ["ENVELOPE_DEBUG"] = "1"


def _common(function: F) -> F:
    """-q and --debug, on every command."""
    function = click.option(
        "-q", "--quiet", is_flag=True, help="No progress bars and no result lines."
    )(function)
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help="Show the traceback of an error.",
    )(function)


def _key_options(function: F) -> F:
    """The options that say which keys and context an envelope has."""
    for decorator in reversed(
        [
            click.option(
                "-k",
                "--key",
                "keys",
                multiple=True,
                metavar="SPEC",
                help="One layer's key, once per layer, innermost first: local:PATH or a Key "
                "Vault key id https://VAULT/keys/NAME[/VERSION]; a layer's alternates are "
                "separated by commas.",
            ),
            click.option(
                "-c",
                "--config",
                metavar="FILE",
                envvar="ENVELOPE_CONFIG",
                help="A TOML file naming the layers (and context); env ENVELOPE_CONFIG.",
            ),
            click.option(
                "--ca-file",
                metavar="PEM",
                envvar="ENVELOPE_CA_FILE",
                help="Trust anchors for Key Vault and its identity endpoint, replacing the "
                "default roots; env ENVELOPE_CA_FILE.",
            ),
            click.option(
                "-j",
                "--jobs",
                type=click.IntRange(min=0),
                default=0,
                help="Worker processes for a directory (default: one per core).",
            ),
        ]
    ):
        function = decorator(function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="envelope")
def cli() -> None:
    """Layered AES-256 envelope encryption of files, with local or Azure Key Vault keys.

    \b
    Exit codes:
      0  success
      1  integrity or format failure
      2  usage
      3  key access (including a missing or unreadable key file, and a key that
         cannot unwrap)
      4  insecure transport
    """


# -- keygen --------------------------------------------------------------------------------


@cli.command()
@click.argument("path")
@click.option("--key-id", help="The key's id (default: derived from the key).")
@_common
def keygen(path: str, key_id: str | None, quiet: bool) -> int:
    """Write a new local key to PATH (mode 0600). An existing file is never replaced."""
    key = LocalKey.generate(key_id)
    try:
        key.save(path)
    except FileExistsError:
        raise CliError(
            f"{path} exists; keygen never replaces a key file (every message wrapped under "
            "it would be lost): choose another path"
        ) from None
    click.echo(key.key_id)
    return ExitCode.OK


# -- encrypt / decrypt -------------------------------------------------------------------


def _crypt_command(operation: str) -> Callable[[F], F]:
    doc = {
        "encrypt": "Encrypt INPUT (a file, a directory with -r, or - for standard input).\n\n"
        f"The output is INPUT{SUFFIX} unless -o names it (- is standard output); "
        "a directory is mirrored under -o (default: INPUT.envelope).",
        "decrypt": "Decrypt INPUT (a file, a directory with -r, or - for standard input).\n\n"
        f"The output is INPUT without {SUFFIX} unless -o names it (- is standard output); "
        "a directory is mirrored under -o. An output appears only once every frame of its "
        "message verified.",
    }[operation]

    def decorate(function: F) -> F:
        function.__doc__ = doc + " An existing output is never replaced without --force."
        for decorator in reversed(
            [
                cli.command(operation),
                click.argument("input"),
                click.option("-o", "--output", metavar="PATH", help="The output (- for stdout)."),
                click.option("-r", "--recursive", is_flag=True, help="INPUT is a directory."),
                click.option(
                    "--in-place",
                    is_flag=True,
                    help="Replace each input with its output (kept until the output is complete).",
                ),
                click.option("-f", "--force", is_flag=True, help="Replace existing outputs."),
                click.option(
                    "-C",
                    "--context",
                    "contexts",
                    multiple=True,
                    metavar="KEY=VALUE",
                    help="An entry of the encryption context (repeatable); decryption needs "
                    "the same entries.",
                ),
                _key_options,
                _common,
            ]
        ):
            function = decorator(function)
        return function

    return decorate


@_crypt_command("encrypt")
def encrypt(**options: Any) -> int:
    return _crypt("encrypt", **options)


@_crypt_command("decrypt")
def decrypt(**options: Any) -> int:
    return _crypt("decrypt", **options)


def _crypt(
    operation: str,
    *,
    input: str,
    output: str | None,
    recursive: bool,
    in_place: bool,
    force: bool,
    contexts: Sequence[str],
    **options: Any,
) -> int:
    if in_place and output is not None:
        raise click.UsageError("--in-place and -o exclude each other")
    rename = _add_suffix if operation == "encrypt" else _strip_suffix

    def plan(quiet: bool) -> list[Job]:
        if input == "-":
            if recursive or in_place:
                raise click.UsageError("standard input is one stream: no -r, no --in-place")
            target = _file_target(output or "-", "-", rename)
            if operation == "encrypt" and target == "-" and sys.stdout.isatty():
                raise CliError("refusing to write a ciphertext to a terminal: redirect or use -o")
            return [Job("-", target, "standard input", None)]
        if os.path.isdir(input):
            if not recursive:
                raise CliError(f"{input} is a directory; pass -r to process it")
            return _plan_tree(Path(input), output, rename, in_place, operation, quiet)
        size = os.stat(input).st_size
        target = input if in_place else _file_target(output, input, rename)
        if target == "-" and operation == "encrypt" and sys.stdout.isatty():
            raise CliError("refusing to write a ciphertext to a terminal: redirect or use -o")
        if not in_place and target != "-" and _same_file(input, target):
            raise CliError(f"{target} is the input; pass --in-place to replace it")
        return [Job(input, target, input, size)]

    return _execute(operation, plan, contexts=contexts, overwrite=force or in_place, **options)


def _execute(
    operation: str,
    plan: Callable[[bool], list[Job]],
    *,
    keys: Sequence[str],
    config: str | None,
    ca_file: str | None,
    jobs: int,
    quiet: bool,
    contexts: Sequence[str] = (),
    overwrite: bool,
) -> int:
    """Check the keys' specs, plan the jobs, build the envelope (reading key files), then
    do the work."""
    recipe = load_recipe(keys, config, contexts, ca_file)
    planned = plan(quiet)
    if overwrite:
        remove_leftovers(planned)
    built = recipe.build()
    try:
        # A rewrapped header names these ids: a file that names them already is done.
        target_ids = _target_ids(built) if operation == "rewrap" else None
        task = Task(operation, recipe, overwrite=overwrite, target_ids=target_ids)
        return run(task, planned, built, make_reporter(quiet), _workers(jobs, planned))
    finally:
        built.close()


def _add_suffix(name: str) -> str:
    return name + SUFFIX


def _strip_suffix(name: str) -> str:
    if not name.endswith(SUFFIX) or name == SUFFIX:
        raise CliError(f"{name} does not end in {SUFFIX}: name the output with -o")
    return name[: -len(SUFFIX)]


def _file_target(output: str | None, source: str, rename: Callable[[str], str]) -> str:
    if output == "-":
        return "-"
    if output is None:
        return str(Path(source).with_name(rename(Path(source).name)))
    if os.path.isdir(output):
        if source == "-":
            raise CliError(f"{output} is a directory: name the output file")
        return str(Path(output) / rename(Path(source).name))
    return output


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _plan_tree(
    root: Path,
    output: str | None,
    rename: Callable[[str], str],
    in_place: bool,
    operation: str,
    quiet: bool,
) -> list[Job]:
    """One job per regular file under ``root``, in path order, the tree mirrored under the
    output directory (a file of a decrypted tree without the suffix keeps its name)."""
    if output == "-":
        raise CliError("a directory cannot go to standard output: name a directory with -o")
    if in_place:
        out_root = root
    elif output is not None:
        out_root = Path(output)
    elif operation == "encrypt":
        out_root = root.with_name(root.name + SUFFIX)
    else:
        out_root = Path(_strip_suffix(str(root)))
    if out_root.exists() and not out_root.is_dir():
        raise CliError(f"{out_root} exists and is not a directory")
    excluded = out_root.resolve() if not in_place else None
    planned: list[Job] = []
    mirrored: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() != excluded)
        mirrored.append(out_root / here.relative_to(root))
        for name in sorted(filenames):
            path = here / name
            if is_temporary(name):
                continue
            info = os.lstat(path)
            relative = path.relative_to(root)
            if not stat.S_ISREG(info.st_mode):
                if not quiet:
                    click.echo(f"skipped {relative} (not a regular file)", err=True)
                continue
            if in_place:
                target = path
            else:
                try:
                    target_name = rename(name)
                except CliError:
                    target_name = name
                target = out_root / relative.parent / target_name
            planned.append(Job(str(path), str(target), str(relative), info.st_size))
    if not in_place:
        for directory in mirrored:
            directory.mkdir(parents=True, exist_ok=True)
    return planned


def _workers(requested: int, planned: Sequence[Job]) -> int:
    if requested:
        return requested
    # Starting worker processes costs a fraction of a second: worth it for more than a few
    # files or more than a few MiB.
    total = sum(job.size or 0 for job in planned)
    if len(planned) < 2 or (len(planned) < 16 and total < 8 << 20):
        return 1
    return os.cpu_count() or 1


# -- rewrap ----------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR...")
@_key_options
@_common
def rewrap(paths: Sequence[str], **options: Any) -> int:
    """Rewrap messages in place under the layers of --key (or --config): the header only,
    atomically. A directory is rewrapped file by file; run again after an interruption
    and the files already done are skipped.

    Each layer's keys must include one that can unwrap the messages now: list the old KEK
    beside the new one (--key local:new.key,local:old.key) and rewrap again without it
    once every message names the new one."""

    def plan(quiet: bool) -> list[Job]:
        planned: list[Job] = []
        for path in paths:
            if os.path.isdir(path):
                planned += _plan_tree(Path(path), None, str, True, "rewrap", quiet)
            else:
                planned.append(Job(path, path, path, os.stat(path).st_size))
        return planned

    return _execute("rewrap", plan, overwrite=True, **options)


def _target_ids(built: Built) -> tuple[tuple[str, ...], ...]:
    """The key ids a header rewrapped now would name, learned by wrapping a throwaway key
    once with every KEK (a Key Vault key names its current version)."""
    probe = secrets.token_bytes(32)
    return tuple(
        tuple(kek.wrap_key(probe).key_id for kek in layer) for layer in built.envelope.layers
    )


@cli.command("rewrap-blobs")
@click.argument("container_url", metavar="CONTAINER_URL")
@click.option("--prefix", default="", help="Only the blobs whose names start with PREFIX.")
@click.option(
    "--account-name",
    envvar="AZURE_STORAGE_ACCOUNT",
    metavar="NAME",
    help="The storage account, when CONTAINER_URL's host does not name it (a custom "
    "domain): the blobs' binding names it, and so does AZURE_STORAGE_KEY's credential.",
)
@_key_options
@_common
def rewrap_blobs_command(
    container_url: str,
    prefix: str,
    account_name: str | None,
    keys: Sequence[str],
    config: str | None,
    ca_file: str | None,
    jobs: int,
    quiet: bool,
) -> int:
    """Rewrap every blob under CONTAINER_URL (https://ACCOUNT.blob.core.windows.net/
    CONTAINER) whose name starts with --prefix: the header block of each only, in place,
    several blobs at once (-j, default 8). Run it again after an interruption: the blobs
    already done are skipped, judged by the key ids in each header, which nothing
    authenticates until a blob is read: read the blobs back with the new keys before
    retiring an old one.

    \b
    Storage credentials: a SAS in the URL; else the account key in AZURE_STORAGE_KEY;
    else the Key Vault credential (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
    or managed identity and the developer sign-ins). --ca-file also replaces the trusted
    roots for storage."""
    from ..blob import secure_container_client  # noqa: PLC0415 - the Storage SDK on use
    from ..blob._secure import uses_default_credential  # noqa: PLC0415
    from ._blobs import DEFAULT_JOBS, rewrap_blobs, storage_credential  # noqa: PLC0415

    recipe = load_recipe(keys, config, (), ca_file)
    built = recipe.build()
    try:
        policy, fallback = built.remote()
        credential = storage_credential(container_url, fallback, account_name)
        container = secure_container_client(container_url, credential, tls_policy=policy)
        built.closers.append(container.close)
        if uses_default_credential(container_url, credential):
            # The library's default credential, made for this container: closed with it.
            built.closers.append(container.credential.close)
        target_ids = _target_ids(built)
        reporter = make_reporter(quiet)
        jobs = jobs or DEFAULT_JOBS
        return rewrap_blobs(container, prefix, built, target_ids, reporter, jobs, account_name)
    finally:
        built.close()


# -- inspect -----------------------------------------------------------------------------------


@cli.command("inspect")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_common
def inspect_command(file: str, as_json: bool, quiet: bool) -> int:
    """Show what the header of FILE (or - for standard input) says, without any key: format,
    frame size, context, and each layer's algorithm and key ids. Nothing shown is
    authenticated until the message is decrypted."""
    if file == "-":
        info = inspect(sys.stdin.buffer)
    else:
        if os.path.isdir(file):
            raise CliError(f"{file} is a directory; inspect takes a file")
        info = inspect(file)
    click.echo(json.dumps(_as_dict(info), indent=2) if as_json else _as_text(info))
    return ExitCode.OK


def _as_dict(info: MessageInfo) -> dict[str, Any]:
    return {
        "version": info.version,
        "suite": info.suite,
        "frame_size": info.frame_size,
        "header_length": info.header_length,
        "plaintext_length": info.plaintext_length,
        "context": dict(info.context),
        "layers": [
            {
                "algorithm": layer.algorithm,
                "keys": [
                    {"key_id": key_id, "wrap_algorithm": wrap}
                    for key_id, wrap in zip(layer.key_ids, layer.wrap_algorithms, strict=True)
                ],
            }
            for layer in info.layers
        ],
    }


def _as_text(info: MessageInfo) -> str:
    length = "unknown" if info.plaintext_length is None else f"{info.plaintext_length} bytes"
    context = ", ".join(f"{k}={v}" for k, v in info.context.items()) or "(empty)"
    lines = [
        f"format      version {info.version}, suite {info.suite}",
        f"frame size  {info.frame_size}",
        f"plaintext   {length}",
        f"context     {context}",
    ]
    for index, layer in enumerate(info.layers):
        lines.append(f"layer {index}     {layer.algorithm}")
        lines += [
            f"  key       {key_id} ({wrap})"
            for key_id, wrap in zip(layer.key_ids, layer.wrap_algorithms, strict=True)
        ]
    return "\n".join(lines)


# -- vault -------------------------------------------------------------------------------------


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Default: any free port.")
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="NAME[:KTY[:SIZE]]",
    help="Create a key at start, e.g. inner:RSA or outer:oct-HSM (repeatable).",
)
@_common
def vault(port: int, keys: Sequence[str], quiet: bool) -> int:
    """Run a local Key Vault (HTTPS on 127.0.0.1) in the foreground until interrupted, and
    print what a shell or an app needs to use it, as environment lines (NAME=value)."""
    from ._vault import serve  # noqa: PLC0415

    return serve(port, keys, quiet)
