"""Writing files so that a reader never sees half of one: write a temporary
file beside the target, then rename it over the target (atomic on POSIX and
Windows). A killed process leaves the previous version intact."""

import contextlib
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


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path` to write the file at. When the block
    ends without an exception, the file is synced to disk and renamed to
    `path`; otherwise it is removed. Several files written side by side:
    one `atomic_path` each, in a `contextlib.ExitStack`. The file gets the
    permissions a plain `open()` would give it (mkstemp makes it private to
    the user)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # on disk before it takes the name: a power loss
        finally:  # leaves the old file or the whole new one
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_atomically(path, write):
    """Call `write(tmp_path)` to produce the file, then move it to `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
