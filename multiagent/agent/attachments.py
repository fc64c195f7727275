"""Unpack a job's attachment tarball under `rundir/attachments/<phase>/`, refusing escapes.

Extraction is done member by member (not `extractall`) so that nothing but
regular files and directories is ever created, and every path is checked
against the destination before anything is written.
"""

from __future__ import annotations

import os
import posixpath

from multiagent.vocabulary import Phase

TYPE_CHECKING = False  # no typing/tarfile import at run time (start-up cost)
if TYPE_CHECKING:
    import tarfile


class AttachmentError(Exception):
    pass


def _check_name(name: str) -> str:
    if not name or name.startswith("/"):
        raise AttachmentError(f"attachment {name!r}: absolute path not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise AttachmentError(f"attachment {name!r}: '..' not allowed")
    if not parts:
        raise AttachmentError(f"attachment {name!r}: empty path")
    if parts[0] not in Phase.WITH_ATTACHMENTS:
        raise AttachmentError(
            f"attachment {name!r}: must lie under one of {', '.join(Phase.WITH_ATTACHMENTS)}/"
        )
    return posixpath.join(*parts)


def unpack(tarball: str, dest: str) -> list[str]:
    """Validate every member first, then extract; returns the extracted file names."""
    import tarfile  # imported per job: the idle agent does not need it

    try:
        archive = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise AttachmentError(f"attachments are not a readable tarball: {exc}") from None
    with archive:
        checked = _checked_members(archive)
        os.makedirs(dest, exist_ok=True)
        root = os.path.realpath(dest)
        extracted: list[str] = []
        for member, name in checked:
            try:
                if _extract(archive, member, name, root):
                    extracted.append(name)
            except OSError as exc:  # e.g. `test/a/b` after a file `test/a`
                raise AttachmentError(
                    f"attachment {member.name!r}: {exc.strerror or exc}"
                ) from None
        return extracted


def _checked_members(archive: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, str]]:
    """Every member with its checked name; raises on the first one not allowed."""
    import tarfile

    try:
        members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AttachmentError(f"attachments tarball is corrupt: {exc}") from None
    checked: list[tuple[tarfile.TarInfo, str]] = []
    for member in members:
        name = _check_name(member.name)
        if member.issym() or member.islnk():
            raise AttachmentError(f"attachment {member.name!r}: links are not allowed")
        if not (member.isfile() or member.isdir()):
            raise AttachmentError(
                f"attachment {member.name!r}: devices, fifos and other special files "
                "are not allowed"
            )
        checked.append((member, name))
    return checked


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, root: str) -> bool:
    """Create one checked member under `root`; True for a file, False for a directory."""
    target = os.path.join(root, *name.split("/"))
    parent = target if member.isdir() else os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    real_parent = os.path.realpath(parent)
    if real_parent != root and not real_parent.startswith(root + os.sep):
        raise AttachmentError(f"attachment {member.name!r}: escapes the job directory")
    if member.isdir():
        return False
    source = archive.extractfile(member)
    if source is None:
        raise AttachmentError(f"attachment {member.name!r}: cannot be read")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    mode = 0o755 if member.mode & 0o100 else 0o644
    try:
        fd = os.open(target, flags, mode)
    except OSError as exc:
        raise AttachmentError(f"attachment {member.name!r}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out, source:
        while chunk := source.read(1 << 16):
            out.write(chunk)
    return True
