"""Writing files so that a reader never sees half of one: write a temporary
file beside the target, then give it the target's name (atomic on POSIX
and Windows). A killed process leaves the previous version intact.

Two ways to give the name: replace (`os.replace`, for files that are
rewritten, such as logs) or create (`os.link`, which fails where the name
exists: for files that must never be overwritten, even by a concurrent
writer that checked at the same time)."""

import contextlib
import errno
import os
import tempfile


def _umask():
    """The process's umask, read without changing it (os.umask can only
    set it, and setting it is global state another thread may see)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _temporary_beside(path):
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def _sync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # on disk before it takes the name: a power loss
    finally:  # leaves the old file or the whole new one
        os.close(fd)


def _exists_error(path):
    return FileExistsError(
        errno.EEXIST,
        f"{path} appeared while it was being written (another writer?); it "
        "was left as it is, not overwritten",
        path,
    )


def create_new(tmp, path):
    """Give the finished file `tmp` the name `path`, which must not exist:
    FileExistsError otherwise, `path` untouched and `tmp` left to the
    caller. A hard link makes the name atomically, or fails where it
    exists. Where the file system has no hard links (FAT, some network
    and FUSE file systems): on Windows a rename, which never replaces
    there; elsewhere the name is first reserved as an empty file
    (`O_CREAT | O_EXCL`), then the file is renamed over that reservation,
    so a reader may briefly see it empty, and a process killed in between
    leaves it empty."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except (OSError, AttributeError, NotImplementedError):  # no hard links
        if os.name == "nt":
            try:
                os.rename(tmp, path)
            except FileExistsError:
                raise _exists_error(path) from None
            return
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    os.remove(tmp)


@contextlib.contextmanager
def atomic_paths(paths, replace=True):
    """Temporary paths beside `paths` (a list) to write the files at. When
    the block ends without an exception, the files are synced to disk and
    take their names; otherwise they are removed. With `replace=False`,
    no existing file is replaced: a name taken by then is a
    FileExistsError, and the files this call had already named are
    removed again (all or none). The files get the permissions a plain
    `open()` would give them (mkstemp makes them private to the user)."""
    paths = [os.fspath(path) for path in paths]
    temporary, named = [], []
    try:
        for path in paths:
            temporary.append(_temporary_beside(path))
        yield list(temporary)
        for tmp in temporary:
            _sync(tmp)
        for tmp, path in zip(temporary, paths, strict=True):
            if replace:
                os.replace(tmp, path)
            else:
                create_new(tmp, path)
                named.append(path)
    except BaseException:
        for path in named:
            with contextlib.suppress(OSError):
                os.remove(path)
        for tmp in temporary:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path` to write the file at. When the block
    ends without an exception, the file is synced to disk and renamed to
    `path` (replacing any file there); otherwise it is removed."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def write_atomically(path, write):
    """Call `write(tmp_path)` to produce the file, then move it to `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
