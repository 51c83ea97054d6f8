"""Safe extraction of untrusted zip and tar archives.

Refuses, with InvalidArgument naming the member: absolute paths and `..` traversal, links
(symbolic or hard) and device files, nested archives (when asked), and bombs — too many members,
too many bytes in total, or a member that expands far beyond its compressed size. Sizes are
counted while extracting, not trusted from headers. A refused archive leaves nothing behind.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from workbench_runtime.errors import InvalidArgument

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 100_000
    max_total_bytes: int = 20 * 1024**3
    # expansion of a zip member over its compressed size, or of the whole archive over its size
    max_ratio: float = 200.0
    allow_nested_archives: bool = True


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def extract(archive: Path, dest: Path, limits: ArchiveLimits = ArchiveLimits(), field: str = "archive",
            name: str | None = None) -> list[Path]:
    """Extract archive into dest (created, must be empty); returns the regular files written.

    name: the archive's name for messages (the user's, where the local file was renamed)."""
    name = name or archive.name
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest, limits, field)
        if tarfile.is_tarfile(archive):
            return _extract_tar(archive, dest, limits, field)
    except InvalidArgument:
        _empty(dest)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        _empty(dest)
        raise InvalidArgument(f"{name} is a damaged archive: {exc}", field=field) from None
    raise InvalidArgument(f"{name} is not a zip or tar archive", field=field)


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _safe_path(name: str, dest: Path, field: str) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (pure.parts and ":" in pure.parts[0]):
        raise InvalidArgument(f"archive member {name!r} has an absolute path", field=field)
    if ".." in pure.parts:
        raise InvalidArgument(f"archive member {name!r} points outside the archive", field=field)
    if any(ord(c) < 0x20 for c in name):
        raise InvalidArgument(f"archive member {name!r} has control characters in its name", field=field)
    target = (dest / pure).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise InvalidArgument(f"archive member {name!r} points outside the archive", field=field)
    return target


class _Budget:
    def __init__(self, limits: ArchiveLimits, field: str, archive_bytes: int):
        self.limits, self.field, self.members, self.total = limits, field, 0, 0
        self.archive_bytes = max(archive_bytes, 1)

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise InvalidArgument(f"archive has more than {self.limits.max_members} members", field=self.field)
        if not self.limits.allow_nested_archives and is_archive(name):
            raise InvalidArgument(f"archive member {name!r} is itself an archive; nested archives are refused",
                                  field=self.field)

    def copy(self, source: BinaryIO, target: Path, name: str, compressed: int | None) -> None:
        written = 0
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            while chunk := source.read(_COPY_CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if self.total > self.limits.max_total_bytes:
                    raise InvalidArgument(
                        f"archive expands beyond {self.limits.max_total_bytes} bytes", field=self.field)
                member_bomb = compressed is not None and written > compressed * self.limits.max_ratio
                archive_bomb = self.total > self.archive_bytes * self.limits.max_ratio
                if (member_bomb or archive_bomb) and written > 1024 * 1024:
                    raise InvalidArgument(
                        f"archive member {name!r} expands more than {self.limits.max_ratio:.0f}x: a decompression bomb",
                        field=self.field)
                out.write(chunk)


def _extract_zip(archive: Path, dest: Path, limits: ArchiveLimits, field: str) -> list[Path]:
    budget, files = _Budget(limits, field, archive.stat().st_size), []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            budget.member(info.filename)
            target = _safe_path(info.filename, dest, field)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InvalidArgument(f"archive member {info.filename!r} is a symbolic link", field=field)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as source:
                budget.copy(source, target, info.filename, max(info.compress_size, 1))
            files.append(target)
    return files


def _extract_tar(archive: Path, dest: Path, limits: ArchiveLimits, field: str) -> list[Path]:
    budget, files = _Budget(limits, field, archive.stat().st_size), []
    with tarfile.open(archive) as tf:
        for member in _members(tf):
            budget.member(member.name)
            target = _safe_path(member.name, dest, field)
            if member.issym() or member.islnk():
                raise InvalidArgument(f"archive member {member.name!r} is a link", field=field)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise InvalidArgument(f"archive member {member.name!r} is not a regular file", field=field)
            source = tf.extractfile(member)
            assert source is not None
            with source:
                budget.copy(source, target, member.name, None)
            files.append(target)
    return files


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    # iterate lazily: a tar bomb of millions of headers is stopped by the member budget
    while (member := tf.next()) is not None:
        yield member
