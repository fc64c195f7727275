"""Unpack a job's attachment tarball under `rundir/attachments/<phase>/`, as upstream does.

Extraction follows tarfile's `data` filter (the one upstream's agent uses): modes are
kept (less setuid/setgid/sticky and group/other write), links that stay inside the
tree are made, and anything that would land or point outside it is refused. Every
member is checked before anything is written; names must start with a phase that
takes attachments.
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
    """Check every member first, then extract; returns the member names (files, links)."""
    import tarfile  # imported per job: the idle agent does not need it

    try:
        archive = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise AttachmentError(f"attachments are not a readable tarball: {exc}") from None
    with archive:
        members = _checked_members(archive)
        os.makedirs(dest, exist_ok=True)
        root = os.path.realpath(dest)
        member: tarfile.TarInfo | None = None
        try:
            for member in members:
                tarfile.data_filter(member, root)
            # The filter runs again per member as it is written: a link made by an
            # earlier member cannot carry a later one out of the tree.
            for member in members:
                archive.extract(member, root, filter="data")
        except tarfile.FilterError as exc:
            raise AttachmentError(f"attachment refused: {exc}") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            name = member.name if member is not None else tarball
            raise AttachmentError(f"attachment {name!r}: {exc}") from None
        return [m.name for m in members if not m.isdir()]


def _checked_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member; raises on the first one whose name or kind is not allowed."""
    import tarfile

    try:
        members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AttachmentError(f"attachments tarball is corrupt: {exc}") from None
    for member in members:
        _check_name(member.name)
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise AttachmentError(
                f"attachment {member.name!r}: devices, fifos and other special files "
                "are not allowed"
            )
    return members
