"""The one writer of tf-fleet's files: atomic (a reader sees the old text or the new,
never half of it), private when they hold anything secret, and never through a path
another user could have planted.

Every file is written to a temp file made in the same directory with
O_CREAT|O_EXCL|O_NOFOLLOW (mode 0600 from the start), given its mode and owner through
its descriptor, then renamed over the target: a symlink planted at the target is
replaced, never followed. A directory that is group- or world-writable is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from multiagent.fleet.errors import UserError

# Modes of what tf-fleet creates; nothing is group- or world-writable.
PRIVATE = 0o600  # credentials, secrets, `environment:` and `device:` values
PUBLIC = 0o644
PRIVATE_DIR = 0o700
PUBLIC_DIR = 0o755

Owner = tuple[int, int]  # (uid, gid)


def owner_of(user: str | None) -> Owner | None:
    """(uid, gid) of a `user:`; None for what runs as tf-fleet does."""
    if not user:
        return None
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


class UnsafePathError(UserError):
    """A path tf-fleet would write through is not private to it."""


def read_text(path: Path) -> str | None:
    """The text of the regular file at `path`; None if there is none (a symlink, a fifo
    or a device counts as none: never followed, never blocked on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read()
    return data.decode("utf-8", errors="replace")


def make_dir(path: Path, mode: int = PUBLIC_DIR, owner: Owner | None = None) -> None:
    """Create `path` (and missing parents, PUBLIC_DIR) and give it `mode` and `owner`
    whatever the umask; an existing one is set to them too. A symlink or a file in its
    place is refused."""
    if _is_as(path, stat.S_ISDIR, mode, owner):
        return  # the common case (`up` looks at every agent's dirs each time): one lstat
    if not os.path.lexists(path):
        if not os.path.lexists(path.parent):
            make_dir(path.parent)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePathError(f"{path} is not a directory (a symlink?): {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _is_as(path: Path, is_kind: Callable[[int], bool], mode: int, owner: Owner | None) -> bool:
    """`path` itself, not a link, is of the kind (stat.S_ISDIR, S_ISREG) with this mode,
    and this owner if one is given."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        is_kind(st.st_mode)
        and stat.S_IMODE(st.st_mode) == mode
        and (owner is None or (st.st_uid, st.st_gid) == owner)
    )


def check_dir(path: Path) -> None:
    """Refuse to write in a directory other users may write to."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o022:
        raise UnsafePathError(
            f"{path} is writable by other users (mode {mode:04o}); tf-fleet writes no file"
            " there: make it writable by its owner only"
        )


def _new_temp(path: Path) -> tuple[int, Path]:
    """A new 0600 file beside `path`, as tempfile.mkstemp makes one (whose import, with
    shutil and random, every command would pay)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def write_atomic(path: Path, text: str, mode: int = PUBLIC, owner: Owner | None = None) -> None:
    if not path.parent.is_dir():
        make_dir(path.parent)
    check_dir(path.parent)
    fd, tmp = _new_temp(path)
    try:
        with os.fdopen(fd, "w") as handle:
            if owner is not None:
                os.fchown(handle.fileno(), *owner)
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A cold `up` writes two files per agent, each fsynced: the kernel's wait for the disk
# dominates and overlaps across threads (bench/: 400 files in 0.07 s with 8 threads
# against 0.2 s in one).
WRITERS = 8
Write = tuple[Path, str, int, Owner | None]  # path, text, mode, owner


def write_all_if_changed(writes: Sequence[Write], texts_on_disk: bool = False) -> list[Path]:
    """write_if_changed for each of `writes`, several at once; the paths written, in
    the order given. The first error is raised once every write has ended.
    `texts_on_disk`: each file was read a moment ago and held its text (a reused
    rendering's), so only its mode and owner are looked at (one lstat, not a read)."""
    if texts_on_disk:
        writes = [w for w in writes if not _is_as(w[0], stat.S_ISREG, w[2], w[3])]
    if len(writes) < 2 * WRITERS:
        return [w[0] for w in writes if write_if_changed(*w)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(WRITERS) as pool:
        changed = list(pool.map(lambda w: write_if_changed(*w), writes))
    return [w[0] for w, done in zip(writes, changed, strict=True) if done]


def write_if_changed(path: Path, text: str, mode: int = PUBLIC, owner: Owner | None = None) -> bool:
    """Write only when the content differs, so mtimes tell what really changed; a file
    whose content is right but whose mode or owner is not gets them (not a change)."""
    if _holds_and_fixed(path, text, mode, owner):
        return False
    write_atomic(path, text, mode, owner)
    return True


def _holds_and_fixed(path: Path, text: str, mode: int, owner: Owner | None) -> bool:
    """The regular file at `path` holds `text` (read as read_text does) and now has its
    mode and owner. One open for the look and the fix: `up` does this for every file of
    the fleet each time."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink, replaced by the write
            return False
        raise
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        if handle.read().decode("utf-8", errors="replace") != text:
            return False
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    return True
