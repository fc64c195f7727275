"""Reading an agent's status file (`run/<name>.json`, written by tf-agent); what it proves
is judged in `model/facts.py`."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
from pathlib import Path
from typing import Any

from multiagent import jsonio
from multiagent.fleet.model.facts import StatusRead

MAX_BYTES = 64 * 1024  # a status file is a few hundred bytes
# The keys tf-fleet reads, and the types a well-formed file has for them.
_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "state": (str,),
    "job_id": (str,),
    "phase": (str,),
    "since": _NUMBER,
    "last_poll": _NUMBER,
    "restart_pending": (bool,),
    "drained": (bool,),
}


def read_status(path: Path) -> StatusRead:
    try:
        raw, st, flags = _read(path)
    except FileNotFoundError:
        return StatusRead(None, problem="missing", disk_full=_full(_vfs(path)))
    except OSError as exc:
        return StatusRead(None, problem=f"unreadable ({exc.strerror})")
    written = st.st_mtime
    vfs = _vfs(path)
    full = _full(vfs)
    try:
        data = jsonio.loads(raw)
    except ValueError:
        return StatusRead(None, written, "not JSON", full)
    if not isinstance(data, dict) or not _well_typed(data):
        return StatusRead(None, written, "malformed (a key has the wrong type)", full)
    return StatusRead(data, written, None, full, _unwritable(path, st, flags, vfs))


def _read(path: Path) -> tuple[bytes, os.stat_result, int]:
    """The file's bytes, stat and inode flags; never through a symlink, never blocking on
    a fifo (the agent's user can write in its run dir)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_BYTES), st, _inode_flags(fd)
    finally:
        os.close(fd)


FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h, as chattr and lsattr use it
_IMMUTABLE_FL = 0x10
_APPEND_FL = 0x20


def _inode_flags(fd: int) -> int:
    """chattr's flags of an open file; 0 where the filesystem has none."""
    try:
        answer = fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))
    except OSError:
        return 0
    return int.from_bytes(answer[:4], sys.byteorder)


def _unwritable(
    path: Path, st: os.stat_result, flags: int, vfs: os.statvfs_result | None
) -> str | None:
    """Why the file's writer (its owner) could not replace it now, if it could not: the
    agent writes a temp file and renames it over this one. Checked on every read, so a
    disk that fills is seen at once, not after the file goes stale."""
    if flags & (_IMMUTABLE_FL | _APPEND_FL):
        return "it is immutable or append-only (chattr)"
    directory = path.parent
    if vfs is None:
        return None
    try:
        dir_st = os.stat(directory)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        dir_flags = _inode_flags(dir_fd)
    finally:
        os.close(dir_fd)
    if vfs.f_flag & os.ST_RDONLY:
        return "its filesystem is read-only"
    # root may use the blocks reserved for it; any other writer may not
    free = vfs.f_bfree if st.st_uid == 0 else vfs.f_bavail
    if free == 0 or vfs.f_favail == 0:
        return "its filesystem is full"
    if dir_flags & (_IMMUTABLE_FL | _APPEND_FL):
        return f"its directory {directory} is immutable or append-only (chattr)"
    if not _may_write(dir_st, st.st_uid, st.st_gid):
        return f"its directory {directory} is not writable by its owner (uid {st.st_uid})"
    return None


def _may_write(dir_st: os.stat_result, uid: int, gid: int) -> bool:
    """Whether `uid` (of group `gid`) may create and rename entries in the directory."""
    if uid == 0:
        return True
    if dir_st.st_uid == uid:
        bits = stat.S_IWUSR | stat.S_IXUSR
    elif dir_st.st_gid == gid:
        bits = stat.S_IWGRP | stat.S_IXGRP
    else:
        bits = stat.S_IWOTH | stat.S_IXOTH
    return dir_st.st_mode & bits == bits


def _well_typed(data: dict[str, Any]) -> bool:
    for key, types in _TYPES.items():
        value = data.get(key)
        if value is None and key != "pid":
            continue
        if not isinstance(value, types) or (types != (bool,) and isinstance(value, bool)):
            return False
    return True


def _vfs(path: Path) -> os.statvfs_result | None:
    """The filesystem of the file's directory (where the agent writes its temp file)."""
    try:
        return os.statvfs(path.parent)
    except OSError:
        return None


def _full(vfs: os.statvfs_result | None) -> bool:
    return vfs is not None and (vfs.f_bavail == 0 or vfs.f_favail == 0)
