"""File operations of the Zarr backend, on a local disk or any fsspec file system.

Two promises the store's commit rests on:

* Durability on local disks: `put` and `sync_tree` fsync the file contents and
  the directory entries that name them, so a video that counts as done
  survives a power loss (object stores make a PUT durable themselves).
* No glob expansion: fsspec's ``rm``/``expand_path`` treat ``* ? [`` in a
  path as patterns, so deleting ``a[1]`` could delete ``a1``. Deletes here list
  the exact files first (``find``/``os.walk``) and remove them one by one.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
import zlib
from collections.abc import Callable

import fsspec

TMP_PREFIX = ".tmp-"
INDEX = "_etspipe"  # the store's own folder: commit markers and failure records


def _read_local(path: str) -> bytes:
    """A whole local file with one open and one read: the reader opens one or two files per random
    segment, and Python's buffered `open` costs about 15 us more per file than this. The store's files
    are written whole and renamed into place, so the size at open is the file's size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, max(size, 1))  # a folder raises IsADirectoryError here
        if len(data) < size:  # a short read (large files, some file systems): read on to the end
            parts = [data]
            while more := os.read(fd, 1 << 20):
                parts.append(more)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


class Files:
    """The folder tree under a store root, addressed by absolute keys of the file system."""

    def __init__(self, fs: fsspec.AbstractFileSystem, local: bool, durable: bool = True) -> None:
        self.fs = fs
        self.local = local
        self.durable = durable and local

    # ------------------------------------------------------------------ reading
    def get(self, key: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        try:
            if self.local:
                return _read_local(key)
            return self.fs.cat_file(key)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def exists(self, key: str) -> bool:
        return os.path.exists(key) if self.local else self.fs.exists(key)

    def listdir(self, folder: str) -> dict[str, int]:
        """Names in `folder` (files and folders) -> size in bytes (0 for folders); {} if missing."""
        try:
            if self.local:
                out = {}
                with os.scandir(folder) as entries:
                    for entry in entries:
                        try:
                            out[entry.name] = 0 if entry.is_dir() else entry.stat().st_size
                        except FileNotFoundError:  # removed by another process meanwhile
                            continue
                return out
            items = self.fs.ls(folder, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out = {}
        for item in items:
            name = str(item["name"]).rstrip("/")
            if name.lstrip("/") != folder.rstrip("/").lstrip("/"):
                out[name.rsplit("/", 1)[-1]] = 0 if item.get("type") == "directory" else int(item.get("size") or 0)
        return out

    # ------------------------------------------------------------------ writing
    def put(self, key: str, data: bytes, just_before: Callable[[], object] | None = None) -> None:
        """Write a small file so that no reader and no crash ever sees half of it.

        `just_before` runs right before the file gets its name (after the slow
        part), so that what it reads is as fresh as possible at the switch.
        """
        if not self.local:
            if just_before is not None:
                just_before()
            self.fs.pipe_file(key, data)  # one PUT: atomic on object stores
            return
        folder = os.path.dirname(key)
        tmp = self._write_temporary(folder, data)
        try:
            if just_before is not None:
                just_before()
            os.replace(tmp, key)
        except BaseException:
            self.remove(tmp)
            raise
        finally:
            ACTIVE.discard(os.path.basename(tmp)[len(TMP_PREFIX):])
        self.sync_dir(folder)

    def _write_temporary(self, folder: str, data: bytes) -> str:
        """`data` in a new temporary file of `folder` (fsynced when durable); its path. Its token stays in
        ACTIVE (another thread of this process opening the store must not remove it) until the caller ends."""
        os.makedirs(folder, exist_ok=True)
        token = new_token()
        tmp = os.path.join(folder, f"{TMP_PREFIX}{token}")
        ACTIVE.add(token)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.durable:
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            ACTIVE.discard(token)
            self.remove(tmp)
            raise
        return tmp

    def put_new(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist yet; False if it did (another process won)."""
        if not self.local:
            if self.fs.exists(key):
                return False
            self.fs.pipe_file(key, data)
            return True
        folder = os.path.dirname(key)
        tmp = self._write_temporary(folder, data)
        try:
            os.link(tmp, key)  # atomic and exclusive: fails if `key` exists
            return True
        except FileExistsError:
            return False
        finally:
            ACTIVE.discard(os.path.basename(tmp)[len(TMP_PREFIX):])
            self.remove(tmp)
            self.sync_dir(folder)

    def remove(self, key: str) -> None:
        """Remove one file; no error if it is not there."""
        try:
            if self.local:
                os.remove(key)
            else:
                self.fs.rm_file(key)
        except FileNotFoundError:
            pass

    def remove_dead_temporaries(self, folder: str) -> None:
        """Remove the temporary files in `folder` whose writer's process is gone (a killed commit)."""
        for name in self.listdir(folder):
            if name.startswith(TMP_PREFIX) and not writer_alive(name[len(TMP_PREFIX):]):
                self.remove(f"{folder}/{name}")

    def remove_tree(self, folder: str) -> None:
        """Remove `folder` and everything below it, never expanding globs in its name."""
        if self.local:
            shutil.rmtree(folder, ignore_errors=True)
            return
        try:
            files = self.fs.find(folder, withdirs=False)
        except FileNotFoundError:
            return
        for name in sorted(files, reverse=True):
            self.remove(name)
        try:
            if self.fs.isdir(folder):
                self.fs.rmdir(folder)
        except (FileNotFoundError, OSError, NotImplementedError):
            pass

    # ------------------------------------------------------------------ durability
    def sync_dir(self, folder: str) -> None:
        """fsync a directory so that the entries just created or renamed in it survive a power loss."""
        if not self.durable:
            return
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_tree(self, folder: str) -> None:
        """fsync every file and directory below `folder` (files first, then their directories)."""
        if not self.durable:
            return
        for path, _dirs, files in os.walk(folder, topdown=False):
            for name in files:
                fd = os.open(os.path.join(path, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.sync_dir(path)


# ---------------------------------------------------------------------- writer tokens
# Each write of a video goes to a fresh array named by a token that says who writes it, so that a
# later writer can tell the leftovers of a dead process (same machine, process gone) from the
# array another live process is writing right now.
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
ACTIVE: set[str] = set()  # tokens this process is writing right now (threads of one dask worker)


def new_token() -> str:
    """A unique array name for one write of one video: ``<host crc>-<pid>-<random>``."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def writer_alive(token: str) -> bool:
    """False only when the token's writer ran on this machine and its process is gone."""
    parts = token.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not a token: a stray name
    if parts[0] != _HOST:
        return True  # another machine: no way to tell, so never touch it
    pid = int(parts[1])
    if pid == os.getpid():
        return token in ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
