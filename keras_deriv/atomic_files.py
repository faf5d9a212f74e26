"""Writing files so that a reader never sees half of one: write a temporary
file beside the target, then rename it over the target (atomic on POSIX and
Windows). A killed process leaves the previous version intact."""

import os
import tempfile


def write_atomically(path, write):
    """Call `write(tmp_path)` to produce the file, then move it to `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
