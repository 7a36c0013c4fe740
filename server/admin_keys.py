"""Key files of the `pushjobs-server` commands: `--public-key`, `--key-out`, `--key-dir`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .admin_context import OperationFailed, os_failure

RSA_BITS = 2048


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 (also when the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as fh:  # closes fd, also when fchmod fails
        os.fchmod(fd, 0o600)
        fh.write(data)


def check_key_out(path_text: str) -> Path | None:
    """Validate a `--key-out` target before anything is changed; None means stdout."""
    if path_text == "-":
        return None
    path = Path(path_text)
    if path.is_dir():
        raise OperationFailed(f"{path} is a directory")
    if path.exists() and path.stat().st_size > 0:
        raise OperationFailed(f"{path} already exists; not overwriting a key file")
    if not path.absolute().parent.is_dir():
        raise OperationFailed(f"directory {path.absolute().parent} not found")
    return path


def generate_key_pem() -> tuple[str, bytes]:
    """A new RSA key pair as (public PEM, private PKCS#1 PEM)."""
    from pushjobs.protocol.keys import generate_rsa_key, private_key_pem, public_key_pem

    key = generate_rsa_key(RSA_BITS)
    return public_key_pem(key.public_key()), private_key_pem(key)


def _generate_key_pem_indexed(_: int) -> tuple[str, bytes]:
    return generate_key_pem()


def read_public_key(path_text: str) -> str:
    """Read and validate a public key file (`-` = stdin); return it as SubjectPublicKeyInfo PEM."""
    from pushjobs.protocol.errors import KeyFormatError
    from pushjobs.protocol.keys import load_public_key, public_key_pem

    try:
        data = sys.stdin.buffer.read() if path_text == "-" else Path(path_text).read_bytes()
    except OSError as exc:
        raise os_failure(f"cannot read public key file {path_text}", exc) from None
    try:
        key = load_public_key(data)
    except KeyFormatError as exc:
        raise OperationFailed(f"{path_text} is not a usable RSA public key: {exc}") from None
    return public_key_pem(key)


def fingerprint_of(public_pem: str) -> str:
    """The key's fingerprint for `show`, or `(unreadable key)`."""
    from pushjobs.protocol.keys import key_fingerprint, load_public_key

    try:
        return key_fingerprint(load_public_key(public_pem))
    except Exception:  # a damaged stored key must not break `show`
        return "(unreadable key)"


@dataclass
class KeyMaterial:
    """The public key to store, and the private key to write afterwards (when generated)."""

    public_pem: str
    private_pem: bytes | None = None
    out: Path | None = None  # None with private_pem set = stdout

    def deliver(self) -> None:
        """Write the generated private key (mode 0600, or to stdout)."""
        if self.private_pem is None:
            return
        if self.out is None:
            sys.stdout.write(self.private_pem.decode("ascii"))
            sys.stdout.flush()
        else:
            write_private_file(self.out, self.private_pem)

    @property
    def to_stdout(self) -> bool:
        return self.private_pem is not None and self.out is None

    @property
    def written_note(self) -> str:
        """` (private key written to FILE)` when a key file was written, else empty."""
        if self.private_pem is None or self.out is None:
            return ""
        return f" (private key written to {self.out})"


def key_material(args: argparse.Namespace) -> KeyMaterial:
    """The key of `--public-key FILE`, or a new pair for `--key-out FILE` (checked first)."""
    if args.public_key is not None:
        return KeyMaterial(read_public_key(args.public_key))
    out = check_key_out(args.key_out)
    public_pem, private_pem = generate_key_pem()
    return KeyMaterial(public_pem, private_pem, out)


class _Progress:
    """Progress of key generation on stderr: a rewritten line on a terminal, else every 10%."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.step = max(1, total // 10)
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if self.tty:
            self.stream.write(f"\rgenerating keys: {done}/{self.total}")
            if done == self.total:
                self.stream.write("\n")
        elif done % self.step == 0 or done == self.total:
            elapsed = time.monotonic() - self.started
            self.stream.write(f"generated {done}/{self.total} keys ({elapsed:.1f} s)\n")
        self.stream.flush()


def _generate_keys(count: int) -> Iterable[tuple[str, bytes]]:
    """Yield `count` key pairs, in parallel worker processes when there are many."""
    workers = os.cpu_count() or 1
    if count < 8 or workers < 2:
        for _ in range(count):
            yield generate_key_pem()
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_generate_key_pem_indexed, range(count), chunksize=4)


def remove_files(paths: Iterable[Path]) -> None:
    """Delete the key files written so far (best effort)."""
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def generate_key_files(
    key_dir: Path, names: Sequence[str]
) -> tuple[list[tuple[str, str]], list[Path]]:
    """Generate a key pair per name into `key_dir/<name>.pem` (`--key-dir`).

    Returns the `(name, public PEM)` pairs and the files written; refuses to overwrite a
    non-empty key file, and removes what it wrote when it fails part way.
    """
    if key_dir.exists() and not key_dir.is_dir():
        raise OperationFailed(f"{key_dir} is not a directory")
    for name in names:
        target = key_dir / f"{name}.pem"
        if target.exists() and target.stat().st_size > 0:
            raise OperationFailed(f"{target} already exists; not overwriting a key file")
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pairs: list[tuple[str, str]] = []
    written: list[Path] = []
    progress = _Progress(len(names), sys.stderr)
    try:
        for done, (name, (public_pem, private_pem)) in enumerate(
            zip(names, _generate_keys(len(names)), strict=True), start=1
        ):
            target = key_dir / f"{name}.pem"
            write_private_file(target, private_pem)
            written.append(target)
            pairs.append((name, public_pem))
            progress.update(done)
    except BaseException:
        remove_files(written)
        raise
    return pairs, written
