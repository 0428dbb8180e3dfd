"""Zarr v3 backend: the default store, for local disks and any fsspec URL, with many writers.

Layout under the store root (format version 2)::

    zarr.json                          root group; attributes["etspipe"] = store metadata
    videos/<key>/zarr.json             one group per video (attributes["etspipe_id"] = the id)
    videos/<key>/<token>/              one write of the video: a 2-D array, chunks (chunk_rows, dim)
    _etspipe/complete/<key>.json       commit marker: the id, the token of its array, chunk CRCs, metadata
    _etspipe/failed/<key>.json         failure record
    _etspipe/aux/<name>.npz            store-level arrays (the PCA projection), written once

``<key>`` is `ids.store_key(id)`: ids with glob characters, upper case, dots or
non-ASCII letters are escaped, so no id collides with the store's own names,
with another id on a case-insensitive disk, or expands as a pattern.

Why this shape:

* Atomic by construction. A write puts the rows under a fresh ``<token>``
  that no other writer uses, makes them durable, and then commits with one
  atomic replace of the marker, which names exactly that token. A reader
  follows the marker, so it sees one writer's complete rows or nothing, even
  with two writers of the same video (a rerun, a task dask ran twice). There
  is no lock, so a dead writer leaves nothing that blocks anyone: only an
  uncommitted array, which the next write of that video removes when its
  writer's process is gone (and `store verify --repair` removes anyway).
* Durable. On local disks the chunk files, the array metadata, the marker and
  the directory entries naming them are fsynced before the video counts as
  done. The marker holds the CRC-32 of every chunk file, so `store verify`
  finds a chunk damaged later; a chunk that does not decode to exactly one
  chunk of rows is an error, never wrong rows; an empty marker is not listed.
* Many writers. A video's write touches only its own keys and the store
  metadata is written once, exclusively, so processes creating the same new
  store at the same moment never remove each other's work. (Only its
  ``recipe``, how new rows can be made, may later be replaced, by one atomic
  replace of ``zarr.json``: `FeatureStore.update_meta`.)
* Cheap listing. `complete_ids` is one directory listing of
  ``_etspipe/complete``; a marker also carries the video's metadata, so a
  reader needs one small file per video, not the array metadata.
* Fast reads. zarr-python 3 costs about 1-2 ms per array open or slice; the
  reader decodes the chunk files of this fixed layout with numcodecs directly
  (see benchmarks/bench_store.py for the measured alternatives) and caches
  decoded chunks. The arrays stay ordinary Zarr v3 that `zarr.open` reads.
* Compression: blosc lz4 with byte shuffle (PCA'd float16 barely compresses;
  raw fc7 rows after ReLU are mostly zeros, which lz4 removes at GB/s).

Stores of format version 1 (arrays at ``videos/<id>``, the marker = metadata)
are read; writing into one is refused with one line.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections import OrderedDict

import fsspec
import numcodecs.blosc
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from etspipe.errors import UserError
from features_store.base import FeatureStore, check_compatible, check_store_meta, new_store_meta
from features_store.ids import id_from_key, store_key
from features_store.zarr_checks import ZarrChecks
from features_store.zarr_files import ACTIVE, INDEX, TMP_PREFIX, Files, new_token, writer_alive

log = logging.getLogger(__name__)

LAYOUT = "zarr3-videos-v2"
OLD_LAYOUTS = ("zarr3-videos-v1",)
CODEC = {"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "shuffle"}
WRITE_BLOCK_CHUNKS = 8  # chunks per zarr write call: aligned blocks, no read-modify-write
DECODED_CHUNK_CACHE = 64  # decoded chunks kept by a reader (64 x 256 x 500 x 2 B = 16 MB)
GROUP_DOC = {"zarr_format": 3, "node_type": "group", "attributes": {}}


def _group_bytes(attributes: dict) -> bytes:
    return json.dumps({**GROUP_DOC, "attributes": attributes}, indent=2).encode()


def _marker_doc(raw: bytes | None, video_id: str, old_layout: bool) -> dict | None:
    """A parsed commit marker, or None when it is missing, empty, truncated or not this video's."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if old_layout:
        return {"id": video_id, "array": None, "video": doc} if isinstance(doc.get("n_rows"), int) else None
    ok = (doc.get("id") == video_id and isinstance(doc.get("array"), str) and isinstance(doc.get("video"), dict)
          and isinstance(doc["video"].get("n_rows"), int) and isinstance(doc.get("crc32"), list))
    return doc if ok else None


class ZarrStore(ZarrChecks, FeatureStore):
    """A feature store in a Zarr v3 group (see the module docstring for the layout)."""

    backend = "zarr"

    def __init__(self, path: str, mode: str, meta: dict | None = None, durable: bool = True) -> None:
        self._fs, root = fsspec.core.url_to_fs(path)
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        self._local = "file" in protocols
        self._root = root.rstrip("/")
        self._files = Files(self._fs, self._local, durable)
        exists = self._files.exists(self._key("zarr.json"))
        if mode == "r" and not exists:
            raise UserError(f"no feature store at {path}")
        if mode == "w" or (mode == "a" and not exists):
            store_meta = new_store_meta(meta, path, self.backend)
            store_meta.update(zarr_layout=LAYOUT, codec=CODEC)
            store_meta = self._create(path, store_meta, replace=(mode == "w"))
        else:
            store_meta = check_store_meta(path, self._read_root_meta(path))
        if mode != "r" and store_meta.get("zarr_layout") in OLD_LAYOUTS:
            raise UserError(f"{path} has the store layout of etspipe format version 1, which this etspipe reads "
                            "but does not write; write into a new store (or start over with --overwrite)")
        if mode == "a":
            check_compatible(path, store_meta, meta)
        super().__init__(path, mode, store_meta)
        if mode != "r":
            for kind in ("complete", "failed"):  # commit markers a killed writer left half-made
                self._files.remove_dead_temporaries(self._key(INDEX, kind))
        self._old = store_meta.get("zarr_layout") in OLD_LAYOUTS
        self._zstore = self._open_zarr_store(read_only=(mode == "r"))
        self._fast = store_meta.get("zarr_layout") in (LAYOUT, *OLD_LAYOUTS) and store_meta.get("codec") == CODEC
        self._chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._arrays: dict[str, zarr.Array] = {}
        self._markers: dict[str, dict] = {}

    # ------------------------------------------------------------------ paths
    def _key(self, *parts: str) -> str:
        return "/".join((self._root, *parts))

    def _vkey(self, video_id: str) -> str:
        return video_id if self._old else store_key(video_id)

    def _marker(self, kind: str, video_id: str) -> str:
        return self._key(INDEX, kind, f"{self._vkey(video_id)}.json")

    def _array_rel(self, video_id: str, token: str | None) -> str:
        return f"videos/{video_id}" if token is None else f"videos/{self._vkey(video_id)}/{token}"

    def array_path(self, video_id: str) -> str:
        """Path of a complete video's array inside the Zarr group (for `zarr.open` users and tools)."""
        return self._array_rel(video_id, self._doc(video_id)["array"])

    def _doc(self, video_id: str) -> dict:
        """The commit marker of a complete video (cached)."""
        doc = self._markers.get(video_id)
        if doc is None:
            doc = self._load_marker(video_id)
            if doc is None:
                raise UserError(f"video {video_id!r} is not complete in {self.path}")
            self._markers[video_id] = doc
        return doc

    def _open_zarr_store(self, read_only: bool, rel: str = "") -> zarr.abc.store.Store:
        if self._local:
            return zarr.storage.LocalStore(self._key(rel) if rel else self._root, read_only=read_only)
        url = f"{self.path.rstrip('/')}/{rel}" if rel else self.path
        return zarr.storage.FsspecStore.from_url(url, read_only=read_only)

    # ------------------------------------------------------------------ create / open
    def _read_root_meta(self, path: str) -> dict:
        raw = self._files.get(self._key("zarr.json"))
        try:
            doc = json.loads(raw) if raw is not None else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise UserError(f"{path}: cannot read the store metadata (zarr.json missing or damaged)")
        return (doc.get("attributes") or {}).get("etspipe")

    def _create(self, path: str, store_meta: dict, replace: bool) -> dict:
        """Create the store, or join the one another process created a moment ago (mode 'a')."""
        if self._fs.exists(self._root) and self._fs.isfile(self._root):
            raise UserError(f"{path} is a file, not a Zarr feature store; refusing to overwrite it")
        names = [n for n in self._files.listdir(self._root) if not n.startswith(TMP_PREFIX)]
        if names and "zarr.json" not in names:
            raise UserError(f"{path} exists and is not a feature store; refusing to overwrite it")
        if replace and names:
            check_store_meta(path, self._read_root_meta(path))
            log.info("overwriting feature store %s", path)
            self._files.remove_tree(self._root)
        self._fs.makedirs(self._root, exist_ok=True)
        if not self._files.put_new(self._key("zarr.json"), _group_bytes({"etspipe": store_meta})):
            store_meta = check_store_meta(path, self._read_root_meta(path))  # another process created it
        self._files.put_new(self._key("videos", "zarr.json"), _group_bytes({}))
        for kind in ("complete", "failed"):
            self._fs.makedirs(self._key(INDEX, kind), exist_ok=True)
        return store_meta

    # ------------------------------------------------------------------ markers
    def _load_marker(self, video_id: str) -> dict | None:
        return _marker_doc(self._files.get(self._marker("complete", video_id)), video_id, self._old)

    def _list(self, kind: str) -> dict[str, int]:
        """Ids with a marker of `kind` -> marker size (stray names and temporary files left out)."""
        out = {}
        for name, size in self._files.listdir(self._key(INDEX, kind)).items():
            if name.endswith(".json") and not name.startswith("."):
                video_id = name[:-5] if self._old else id_from_key(name[:-5])
                if video_id is not None:
                    out[video_id] = size
        return out

    # ------------------------------------------------------------------ writing
    def _write(self, video_id: str, rows: np.ndarray, vmeta: dict) -> None:
        key, token = self._vkey(video_id), new_token()
        self._remove_dead_writes(video_id)
        self._files.put_new(self._key("videos", key, "zarr.json"), _group_bytes({"etspipe_id": video_id}))
        rel = self._array_rel(video_id, token)
        ACTIVE.add(token)
        try:
            crcs = self._write_array(rel, rows, vmeta)
            doc = {"id": video_id, "array": token, "dim": self.dim, "dtype": self.dtype,
                   "chunk_rows": self.chunk_rows, "crc32": crcs, "video": vmeta}
            seen: list[dict | None] = []
            self._files.put(self._marker("complete", video_id), json.dumps(doc).encode(),  # the commit
                            just_before=lambda: seen.append(self._load_marker(video_id)))
            old = seen[0]
        except BaseException:
            self._files.remove_tree(self._key(rel))
            raise
        finally:
            ACTIVE.discard(token)
        self._forget(video_id)
        if old and old["array"] != token:
            self._files.remove_tree(self._key(self._array_rel(video_id, old["array"])))
        now = self._load_marker(video_id)
        if now is not None and now["array"] != token:  # another writer committed after us: it wins
            self._files.remove_tree(self._key(rel))

    def _write_array(self, rel: str, rows: np.ndarray, vmeta: dict) -> list[int]:
        """Write the rows as a new array and make it durable; the CRC-32 of each chunk file."""
        n, dim = rows.shape
        cr = self.chunk_rows
        # The array is the root of a store opened at its own folder: zarr then writes nothing above it (it
        # would re-create the parent groups' zarr.json through temporary files, and a writer killed there
        # leaves a file outside the token folder that no rerun removes).
        array = zarr.create_array(
            self._open_zarr_store(read_only=False, rel=rel), shape=(n, dim), chunks=(cr, dim), dtype=self.dtype,
            compressors=BloscCodec(cname=CODEC["cname"], clevel=CODEC["clevel"], shuffle=CODEC["shuffle"]),
            fill_value=0, attributes={"etspipe_video": vmeta},
            config={"write_empty_chunks": True},  # every chunk exists: a missing one is damage, not zeros
        )
        block = cr * WRITE_BLOCK_CHUNKS
        for start in range(0, n, block):
            self._write_block(array, rows, start, min(start + block, n))
        crcs = []
        for index in range(-(-n // cr)):
            raw = self._files.get(self._key(rel, "c", str(index), "0"))
            if raw is None:
                raise OSError(f"chunk {index} of {rel} vanished while it was written")
            crcs.append(zlib.crc32(raw))
        self._files.sync_tree(self._key(rel))
        self._files.sync_dir(self._key(rel.rsplit("/", 1)[0]))
        self._files.sync_dir(self._key("videos"))
        return crcs

    def _write_block(self, array: zarr.Array, rows: np.ndarray, start: int, stop: int) -> None:
        array[start:stop] = rows[start:stop]

    def _remove_dead_writes(self, video_id: str) -> None:
        """Remove this video's arrays that no marker names and whose writer's process is gone."""
        for token in self._stale_arrays(video_id):
            if not writer_alive(token):
                log.debug("removing the leftover %s of an interrupted write of %s", token, video_id)
                self._files.remove_tree(self._key(self._array_rel(video_id, token)))

    def _stale_arrays(self, video_id: str) -> list[str]:
        """Tokens of this video's arrays that its marker does not name (live writes included)."""
        if self._old:
            return []
        before = self._load_marker(video_id)
        names = self._files.listdir(self._key("videos", self._vkey(video_id)))
        after = self._load_marker(video_id)
        named = {d["array"] for d in (before, after) if d}
        return sorted(n for n in names if n != "zarr.json" and not n.startswith(".") and n not in named)

    def _forget(self, video_id: str) -> None:
        self._markers.pop(video_id, None)
        self._arrays.pop(video_id, None)
        for key in [k for k in self._chunks if k[0] == video_id]:
            del self._chunks[key]

    def _delete(self, video_id: str) -> None:
        old = self._load_marker(video_id)
        self._files.remove(self._marker("complete", video_id))  # first: from now on it is not complete
        self._files.sync_dir(self._key(INDEX, "complete"))
        self._forget(video_id)
        if old is not None:
            self._files.remove_tree(self._key(self._array_rel(video_id, old["array"])))
        self._remove_dead_writes(video_id)
        folder = self._key("videos", self._vkey(video_id))
        if not self._old and set(self._files.listdir(folder)) <= {"zarr.json"}:
            self._files.remove_tree(folder)

    # ------------------------------------------------------------------ listing and reading
    def _is_complete(self, video_id: str) -> bool:
        return self._load_marker(video_id) is not None

    def _complete_ids(self) -> list[str]:
        return [vid for vid, size in self._list("complete").items() if size > 0]  # an empty marker is no commit

    def _read_video_meta(self, video_id: str) -> dict | None:
        doc = self._load_marker(video_id)
        if doc is None:
            return None
        self._markers[video_id] = doc
        return doc["video"]

    def _read_rows(self, video_id: str, start: int, stop: int) -> np.ndarray:
        if not self._fast:
            return self._zarr_array(video_id)[start:stop]
        cr = self.chunk_rows
        first, last = start // cr, (stop - 1) // cr
        parts = [self._chunk(video_id, c) for c in range(first, last + 1)]
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return block[start - first * cr: stop - first * cr]

    def _chunk(self, video_id: str, index: int) -> np.ndarray:
        """One decoded chunk ``(chunk_rows, dim)`` of a video, from the cache or the chunk file."""
        key = (video_id, index)
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
            return chunk
        chunk = self._decode_chunk(video_id, index, self._read_chunk_file(video_id, index))
        self._chunks[key] = chunk
        if len(self._chunks) > DECODED_CHUNK_CACHE:
            self._chunks.popitem(last=False)
        return chunk

    def _read_chunk_file(self, video_id: str, index: int) -> bytes:
        rel = self.array_path(video_id)
        raw = self._files.get(self._key(rel, "c", str(index), "0"))
        if raw is None and not self._old:
            now = self._load_marker(video_id)
            if now is None or now["array"] != self._markers[video_id]["array"]:
                self._forget(video_id)
                self._video_meta.pop(video_id, None)
                raise UserError(f"video {video_id!r} in {self.path} was rewritten or removed by another process "
                                "while it was read; read it again")
        if raw is None:
            raise UserError(f"{self.path}: chunk {index} of video {video_id!r} is missing; the store is damaged "
                            "(etspipe store verify --repair, then extract again)")
        return raw

    def _decode_chunk(self, video_id: str, index: int, raw: bytes) -> np.ndarray:
        """Decode one chunk file; a file that is not exactly one chunk of rows is damage, never rows."""
        dtype = np.dtype(self.dtype).newbyteorder("<")
        want = self.chunk_rows * self.dim * dtype.itemsize
        data = b""
        try:  # blosc trusts its header: a truncated file must be caught before decompressing it
            nbytes, _blocksize, cbytes = struct.unpack_from("<III", raw, 4)  # the 16-byte blosc header
            if cbytes == len(raw) and nbytes == want:
                data = numcodecs.blosc.decompress(raw)
        except Exception:  # noqa: BLE001 - blosc raises RuntimeError/ValueError/TypeError on damaged input
            data = b""
        if len(data) != want:
            raise UserError(f"{self.path}: chunk {index} of video {video_id!r} is damaged (truncated or not "
                            "decodable); etspipe store verify --repair, then extract again")
        return np.frombuffer(data, dtype=dtype).reshape(self.chunk_rows, self.dim)

    def _zarr_array(self, video_id: str) -> zarr.Array:
        """The video's array through zarr itself (used for unknown layouts and to check the fast path)."""
        array = self._arrays.get(video_id)
        if array is None:
            array = zarr.open_array(self._zstore, path=self.array_path(video_id), mode="r")
            self._arrays[video_id] = array
        return array

    # ------------------------------------------------------------------ failures
    def _write_failure(self, video_id: str, record: dict) -> None:
        self._files.put(self._marker("failed", video_id), json.dumps({**record, "id": video_id}).encode())

    def _has_failure(self, video_id: str) -> bool:
        return self._files.exists(self._marker("failed", video_id))

    def _delete_failure(self, video_id: str) -> None:
        self._files.remove(self._marker("failed", video_id))

    def _failures(self) -> dict[str, dict]:
        out = {}
        for vid in self._list("failed"):
            try:
                record = json.loads(self._files.get(self._marker("failed", vid)) or b"null")
            except ValueError:
                record = None
            if isinstance(record, dict):
                record.pop("id", None)
                out[vid] = record
        return out

    def _write_aux(self, name: str, data: bytes, exclusive: bool) -> bool:
        key = self._key(INDEX, "aux", f"{name}.npz")
        if exclusive:
            return self._files.put_new(key, data)
        self._files.put(key, data)
        return True

    def _read_aux(self, name: str) -> bytes | None:
        return self._files.get(self._key(INDEX, "aux", f"{name}.npz"))

    def _write_meta(self, meta: dict) -> None:
        self._files.put(self._key("zarr.json"), _group_bytes({"etspipe": meta}))  # one atomic replace

    # ------------------------------------------------------------------ housekeeping
    def _size_on_disk(self) -> int:
        if not self._local:
            return int(self._fs.du(self._root))
        total = 0
        for folder, _dirs, files in os.walk(self._root):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(folder, name))
                except FileNotFoundError:  # another process removed it meanwhile
                    continue
        return total

    def _close(self) -> None:
        self._chunks.clear()
        self._arrays.clear()
        self._markers.clear()
        self._zstore.close()
