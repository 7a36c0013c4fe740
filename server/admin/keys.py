"""Key files of the `pushjobs-server` commands: `--public-key`, `--key-out`, `--key-dir`.

A private key file is always a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600): an existing
path, a symlink included, is refused before anything changes, and nothing is ever truncated.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

from pushjobs.server.admin.context import OperationFailed, UsageError, os_failure

RSA_BITS = 2048
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _exists_message(shown: Path, name: Path | str, dir_fd: int | None) -> str:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return f"{shown} is a symbolic link; not writing a key file through it"
    if stat.S_ISDIR(mode):
        return f"{shown} is a directory"
    return f"{shown} already exists; not overwriting a key file"


def create_private_file(path: Path, *, dir_fd: int | None = None, name: str | None = None) -> int:
    """Create a new key file (mode 0600) and return its fd; an existing path is a usage error.

    With `dir_fd`, `name` is created in that directory and `path` is only what messages show.
    """
    target: Path | str = path if name is None else name
    try:
        fd = os.open(target, _NEW_FILE, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        raise UsageError(_exists_message(path, target, dir_fd)) from None
    except OSError as exc:
        raise os_failure(f"cannot create key file {path}", exc) from None
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
    except OSError as exc:
        os.close(fd)
        raise os_failure(f"cannot set the mode of {path}", exc) from None
    return fd


def _write_fd(fd: int, data: bytes) -> None:
    with open(fd, "wb", closefd=True) as fh:
        fh.write(data)


def _unlink(name: Path | str, dir_fd: int | None = None) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to the new file `path` (mode 0600); refuses an existing path."""
    fd = create_private_file(path)
    try:
        _write_fd(fd, data)
    except BaseException:
        _unlink(path)
        raise


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
    """The public key to store, and the private key to write afterwards (when generated).

    Use it as a context manager around the database change: on success the private key is
    written (to the file created up front, or stdout); on failure that file is removed.
    """

    public_pem: str
    private_pem: bytes | None = None
    out: Path | None = None  # None with private_pem set = stdout
    fd: int | None = None  # the new, still empty key file `out`

    def __enter__(self) -> KeyMaterial:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.deliver()
        else:
            self.discard()

    def deliver(self) -> None:
        """Write the generated private key (mode 0600, or to stdout)."""
        if self.private_pem is None:
            return
        if self.out is None:
            sys.stdout.write(self.private_pem.decode("ascii"))
            sys.stdout.flush()
            return
        if self.fd is None:
            raise RuntimeError("key file already written or discarded")
        fd, self.fd = self.fd, None
        _write_fd(fd, self.private_pem)

    def discard(self) -> None:
        """Remove the key file created for this key (nothing was stored)."""
        if self.fd is not None and self.out is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
            _unlink(self.out)

    @property
    def to_stdout(self) -> bool:
        return self.private_pem is not None and self.out is None

    @property
    def written_note(self) -> str:
        """` (private key written to FILE)` when a key file was written, else empty."""
        if self.private_pem is None or self.out is None:
            return ""
        return f" (private key written to {self.out})"


def new_key_material(key_out: str) -> KeyMaterial:
    """A new key pair for `--key-out FILE` (`-` = stdout); FILE is created first, empty."""
    out = None if key_out == "-" else Path(key_out)
    material = KeyMaterial("", out=out)
    if out is not None:
        material.fd = create_private_file(out)
    try:
        material.public_pem, material.private_pem = generate_key_pem()
    except BaseException:
        material.discard()
        raise
    return material


def key_material(args: argparse.Namespace) -> KeyMaterial:
    """The key of `--public-key FILE`, or a new pair for `--key-out FILE`."""
    if args.public_key is not None:
        return KeyMaterial(read_public_key(args.public_key))
    return new_key_material(args.key_out)


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


def open_key_dir(key_dir: Path) -> int:
    """Open `--key-dir`, created with mode 0700 when missing; return a directory fd.

    An existing directory must belong to this user and not be writable by group or others
    (like ssh's checks): anyone else who can write there could swap or read the new keys.
    """
    try:
        key_dir.mkdir(parents=True, mode=0o700)
        os.chmod(key_dir, 0o700)  # mkdir's mode is reduced by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise os_failure(f"cannot create directory {key_dir}", exc) from None
    try:
        fd = os.open(key_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise UsageError(f"{key_dir} is not a directory") from None
    except OSError as exc:
        raise os_failure(f"cannot open directory {key_dir}", exc) from None
    st = os.fstat(fd)
    problem = ""
    if st.st_uid != os.geteuid():
        problem = f"is owned by another user (uid {st.st_uid})"
    elif st.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        os.close(fd)
        raise UsageError(
            f"{key_dir} {problem}; use a directory of your own with mode 0700 (or a new one)"
        )
    return fd


def generate_key_files(
    key_dir: Path, names: Sequence[str]
) -> tuple[list[tuple[str, str]], list[Path]]:
    """Generate a key pair per name into `key_dir/<name>.pem` (`--key-dir`).

    Returns the `(name, public PEM)` pairs and the files written; refuses an existing key file
    or an unsafe directory before generating anything, and removes what it wrote when it fails
    part way.
    """
    dir_fd = open_key_dir(key_dir)
    try:
        for name in names:
            try:
                os.lstat(f"{name}.pem", dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            raise UsageError(_exists_message(key_dir / f"{name}.pem", f"{name}.pem", dir_fd))
        return _write_key_files(key_dir, dir_fd, names)
    finally:
        os.close(dir_fd)


def _write_key_files(
    key_dir: Path, dir_fd: int, names: Sequence[str]
) -> tuple[list[tuple[str, str]], list[Path]]:
    pairs: list[tuple[str, str]] = []
    written: list[Path] = []
    progress = _Progress(len(names), sys.stderr)
    try:
        for done, (name, (public_pem, private_pem)) in enumerate(
            zip(names, _generate_keys(len(names)), strict=True), start=1
        ):
            target = key_dir / f"{name}.pem"
            fd = create_private_file(target, dir_fd=dir_fd, name=f"{name}.pem")
            written.append(target)
            _write_fd(fd, private_pem)
            pairs.append((name, public_pem))
            progress.update(done)
    except BaseException:
        remove_files(written)
        raise
    return pairs, written
