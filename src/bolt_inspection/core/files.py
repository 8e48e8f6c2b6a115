"""Output files: checked before the work, written so a failure never leaves half a file.

Every command that writes a result (a CSV, a plot, a summary, overlays) first asks
:func:`check_output_file` / :func:`check_output_dir`, so an unwritable path fails in one line
before minutes of work; then it writes through :func:`atomic_output`, so what is at the path is
either the whole new file or whatever was there before, never a truncated one that looks done.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bolt_inspection.core.errors import OutputError


def _probe_dir(folder: Path, what: str) -> None:
    """Make ``folder`` (with parents) and prove a file can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f'{what}: cannot create folder {folder} '
                          f'({exc.strerror or exc})') from None
    if not folder.is_dir():
        raise OutputError(f'{what}: {folder} is not a folder')
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.write-test-'):
            pass
    except OSError as exc:
        raise OutputError(f'{what}: cannot write in {folder} ({exc.strerror or exc})') from None


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Raise :class:`OutputError` (one line naming ``what``) unless ``path`` can be written.

    Creates the parent folders (the write would create them anyway).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f'{what}: {path} is a folder, expected a file name')
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f'{what}: {path} is not writable')
    _probe_dir(path.parent, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Raise :class:`OutputError` unless ``path`` is (or can be made) a writable folder."""
    path = Path(path).expanduser()
    _probe_dir(path, what)
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) that replaces ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: The file could not be written or moved into place (one line).
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.stem}.tmp-{os.getpid()}{path.suffix}')
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f'{path}: cannot write ({exc.strerror or exc})') from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MB chunks (model ids, export manifests)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
