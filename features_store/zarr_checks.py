"""What `store verify` needs from the Zarr backend: chunk checksums and the orphan scan.

Kept apart from the read/write path of `zarr_backend` (which mixes this in)
because it runs only when a user asks for a check, and it reads every file.
"""

from __future__ import annotations

import zlib

from features_store.ids import id_from_key
from features_store.zarr_files import INDEX, TMP_PREFIX, writer_alive


class ZarrChecks:
    """Verification hooks of `ZarrStore` (see `FeatureStore._check_video` and `_orphans`)."""

    def _check_video(self, video_id: str) -> list[str]:
        """Problems of a complete video's files that reading its rows cannot show: chunk CRCs."""
        if self._old:
            return []
        doc = self._doc(video_id)
        rel = self._array_rel(video_id, doc["array"])
        n_chunks = -(-int(doc["video"]["n_rows"]) // self.chunk_rows)
        if len(doc["crc32"]) != n_chunks or doc.get("dim") != self.dim or doc.get("dtype") != self.dtype:
            return ["marker does not match the store (chunks, dim or dtype)"]
        problems = []
        for index, crc in enumerate(doc["crc32"]):
            raw = self._files.get(self._key(rel, "c", str(index), "0"))
            if raw is None:
                problems.append(f"chunk {index} is missing")
            elif zlib.crc32(raw) != crc:
                problems.append(f"chunk {index} does not match its checksum (damaged after the commit)")
        return problems

    def _orphans(self) -> list[tuple[str, str]]:
        """Files no complete video uses: (path relative to the store, why); writes in progress left out."""
        out = []
        for kind in ("complete", "failed"):
            for name, size in self._files.listdir(self._key(INDEX, kind)).items():
                video_id = id_from_key(name[:-5]) if name.endswith(".json") and not self._old else name[:-5]
                if name.startswith(TMP_PREFIX):
                    if not writer_alive(name[len(TMP_PREFIX):]):
                        out.append((f"{INDEX}/{kind}/{name}", "temporary file of an interrupted write"))
                elif video_id is None:
                    out.append((f"{INDEX}/{kind}/{name}", "a name no video id has"))
                elif kind == "complete" and (size == 0 or self._load_marker(video_id) is None):
                    out.append((f"{INDEX}/{kind}/{name}", "empty or damaged commit marker"))
        if self._old:
            return out
        for key in self._files.listdir(self._key("videos")):
            video_id = id_from_key(key)
            if key == "zarr.json":
                continue
            if video_id is None:
                why = ("temporary file of a zarr write killed by an older etspipe" if key.endswith(".partial")
                       else "not the folder of any video id")
                out.append((f"videos/{key}", why))
                continue
            out += [(f"videos/{key}/{t}", "rows of an interrupted or superseded write")
                    for t in self._stale_arrays(video_id) if not writer_alive(t)]
        return out

    def _remove_orphan(self, rel: str) -> None:
        target = self._key(rel)
        if self._files.listdir(target):
            self._files.remove_tree(target)
        else:
            self._files.remove(target)
