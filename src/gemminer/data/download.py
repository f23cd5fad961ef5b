"""Downloading and unpacking data set archives: checksummed, atomic and path-safe."""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..errors import DataError

_CHUNK = 1 << 20


def file_digest(path: str | Path, algo: str) -> str:
    """Hex digest of the file at ``path`` with hash ``algo`` (e.g. ``"md5"``, ``"sha256"``)."""
    try:
        h = hashlib.new(algo, usedforsecurity=False)
    except ValueError as exc:
        raise DataError(f"unknown hash algorithm {algo!r}") from exc
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return h.hexdigest()


def _offline_hint() -> str:
    return (
        "If this machine is offline, fetch the data elsewhere and pass --data-dir "
        "pointing to a folder that already holds it."
    )


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, verify its checksum(s), and return ``dest``.

    The bytes stream into a temporary file beside ``dest`` that is renamed into place
    only once complete and verified, so ``dest`` never holds a partial download.
    """
    dest = Path(dest)
    expected = {k: v.lower() for k, v in (("md5", md5), ("sha256", sha256)) if v}
    hashes = {k: hashlib.new(k, usedforsecurity=False) for k in expected}
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = open(tmp, "xb")  # closed by the with statement below
    except OSError as exc:
        raise DataError(f"cannot write the download of {url} to {dest.parent}: {exc}") from exc
    try:
        try:
            with out, urllib.request.urlopen(url, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=None if progress else True,
                    leave=False,
                ) as bar:
                    while block := resp.read(_CHUNK):
                        out.write(block)
                        for h in hashes.values():
                            h.update(block)
                        received += len(block)
                        bar.update(len(block))
                if total is not None and received != total:
                    raise OSError(f"connection closed after {received} of {total} bytes")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                reason: object = f"HTTP error {exc.code} ({exc.reason})"
            else:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DataError(f"could not download {url}: {reason}. {_offline_hint()}") from exc
        for algo, want in expected.items():
            got = hashes[algo].hexdigest()
            if got != want:
                raise DataError(
                    f"checksum mismatch for {url}: expected {algo} {want}, got {got}; "
                    "the download was discarded"
                )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Reject members that would land outside ``dest`` or are not plain files/folders/links."""
    name = member.name
    _safe_parts(name)
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise DataError(f"archive member {name!r} is not a regular file, folder or link")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith(("/", "\\")):
            raise DataError(f"link {name!r} in archive points to absolute path {target!r}")
        # Symbolic links resolve relative to their folder, hard links relative to the root.
        base = dest / PurePosixPath(name).parent if member.issym() else dest
        resolved = os.path.realpath(base / target)
        root = os.path.realpath(dest)
        if os.path.commonpath([root, resolved]) != root:
            raise DataError(f"link {name!r} in archive points outside it to {target!r}")


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract ``archive`` (any tar compression) into ``dest``, refusing unsafe members."""
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, dest)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(dest, members=members)
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from exc


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path parts of archive member ``name``; a :class:`DataError` if it could escape."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise DataError(f"unsafe path {name!r} in archive")
    return parts


def extract_zip(archive: Path, dest: Path, members: Collection[str] | None = None) -> None:
    """Extract ``archive`` (a zip) into ``dest``, or only the named ``members``.

    Every member is checked first: paths that would land outside ``dest`` (absolute, with
    ``..`` or a drive) and symbolic links are refused, so nothing is written outside ``dest``.
    """
    dest = Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _safe_parts(info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(f"archive member {info.filename!r} is a symbolic link")
            if members is not None:
                wanted = set(members)
                missing = wanted - {info.filename for info in infos}
                if missing:
                    raise DataError(f"{archive} does not contain {', '.join(sorted(missing))}")
                infos = [info for info in infos if info.filename in wanted]
            dest.mkdir(parents=True, exist_ok=True)
            for info in infos:
                target = dest.joinpath(*_safe_parts(info.filename))
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except DataError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        zlib.error,
    ) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from exc


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a zip or a tar (any compression) into ``dest``, refusing unsafe members."""
    if zipfile.is_zipfile(archive):
        extract_zip(archive, dest)
    else:
        extract_tar(archive, dest)


def unpack_folder(archive: Path, data_dir: Path, folder: str) -> Path:
    """Extract ``archive`` and move its top-level ``folder`` to ``data_dir/folder``.

    The archive is extracted into a temporary folder inside ``data_dir`` that is removed
    afterwards, so an interrupted extraction leaves no half-written ``folder`` behind.
    """
    data_dir = Path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=".extract-"))
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {data_dir}: {exc}") from exc
    try:
        extract_archive(archive, tmp)
        found = tmp / folder
        if not found.is_dir():
            raise DataError(f"{archive} does not contain the folder {folder}/")
        os.replace(found, data_dir / folder)
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {data_dir}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_dir / folder


def check_md5(path: Path, md5: str | None) -> None:
    """Raise a :class:`DataError` if the file at ``path`` does not have checksum ``md5``."""
    if not md5:
        return
    actual = file_digest(path, "md5")
    if actual != md5.lower():
        raise DataError(
            f"checksum mismatch for {path}: expected md5 {md5.lower()}, got {actual}; "
            "delete the file to download it again"
        )


def obtain_archive(
    path: Path, url: str, md5: str | None, download: bool, missing: DataError
) -> Path:
    """``path`` checked against ``md5`` if it exists, else downloaded from ``url`` if allowed.

    Raises ``missing`` (the data set's description of what it looked for) when the file is
    absent and downloading is off.
    """
    path = Path(path)
    if path.is_file():
        check_md5(path, md5)
    elif download:
        download_file(url, path, md5=md5)
    else:
        raise missing
    return path


def missing_data(name: str, data_dir: Path, looked_for: str) -> DataError:
    """The error for data set ``name`` missing from ``data_dir`` while downloading is off."""
    data_dir = Path(data_dir)
    where = (
        ""
        if data_dir.is_dir()
        else " (that is a file, not a folder)"
        if data_dir.is_file()
        else " (the folder does not exist)"
    )
    return DataError(
        f"no {name} data in {data_dir}{where}. Looked for: {looked_for}. Downloading is off "
        "(--no-download / download=False): pass --data-dir pointing to a folder that holds "
        "one of these, or allow the download."
    )
