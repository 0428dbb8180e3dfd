"""Video ids: where they come from and which ones are allowed.

An id becomes a directory name in a Zarr store, a file name for its markers and
an HDF5 link name. Validation makes sure that no id can address anything
outside its own entry (``../x``, ``/etc/x``, ``a/b``), that ids never collide
with the store's temporary files (which start with a dot), and that a bad id is
reported with the reason instead of failing deep inside a backend.
"""

from __future__ import annotations

from pathlib import PurePath

from etspipe.errors import UserError

MAX_ID_LENGTH = 200  # well below the 255-byte file-name limit, leaves room for ".json"


def _problem(video_id: str) -> str | None:
    """Why `video_id` is not a valid id, or None."""
    if not video_id:
        return "it is empty"
    if video_id in (".", ".."):
        return "'.' and '..' name directories"
    if "/" in video_id or "\\" in video_id:
        return "it contains a path separator ('/' or '\\'), so it could address another entry"
    if "\0" in video_id:
        return "it contains a NUL character"
    if any(ord(c) < 32 or ord(c) == 127 for c in video_id):
        return "it contains a control character"
    if video_id.startswith("."):
        return "it starts with '.', which is reserved for the store's temporary files"
    if video_id != video_id.strip():
        return "it starts or ends with white space"
    if len(video_id.encode("utf-8")) > MAX_ID_LENGTH:
        return f"it is longer than {MAX_ID_LENGTH} bytes"
    return None


def validate_video_id(video_id: str) -> str:
    """Return `video_id` unchanged if it is a safe id, else raise UserError saying why."""
    if not isinstance(video_id, str):
        raise UserError(f"video id must be a string, got {type(video_id).__name__} {video_id!r}")
    why = _problem(video_id)
    if why:
        raise UserError(f"invalid video id {video_id!r}: {why}")
    return video_id


def video_id_from_path(path: str | PurePath) -> str:
    """The id of a video file: its name without the extension (ActivityNet style ``v_<youtube id>``)."""
    text = str(path).replace("\\", "/").rstrip("/")
    name = text.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    try:
        return validate_video_id(stem)
    except UserError as exc:
        raise UserError(f"{path}: cannot derive a video id from the file name ({exc})") from None


# ---------------------------------------------------------------------- file-system keys
# An id becomes a file/folder name in a Zarr store. Names there must not be globs (fsspec expands
# them in deletes), must not be the store's own names (``zarr.json``, ``.tmp-*``, ``~`` tokens),
# and must stay distinct on case-insensitive file systems (``v_A`` vs ``v_a``). So the key keeps
# only ``a-z 0-9 _ -`` as they are, writes an upper-case letter as ``^`` + its lower case, and
# every other byte of the UTF-8 form as ``%xx`` (lower-case hex). The mapping is reversible, so a
# directory listing gives the ids back without opening any file.
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
MAX_KEY_LENGTH = 230  # bytes; leaves room for ".json" and the temporary-file prefix under 255


def store_key(video_id: str) -> str:
    """The file-system-safe, case-insensitively unique name of a valid `video_id`."""
    out = []
    for char in video_id:
        if char in _KEEP:
            out.append(char)
        elif "A" <= char <= "Z":
            out.append("^" + char.lower())
        else:
            out.extend(f"%{b:02x}" for b in char.encode("utf-8"))
    key = "".join(out)
    if len(key) > MAX_KEY_LENGTH:
        raise UserError(f"invalid video id {video_id!r}: it is too long once escaped for file names "
                        f"({len(key)} > {MAX_KEY_LENGTH} bytes)")
    return key


def id_from_key(key: str) -> str | None:
    """The id a `store_key` came from, or None for a name that no key has (a stray file)."""
    raw, i = bytearray(), 0
    while i < len(key):
        char = key[i]
        if char in _KEEP:
            raw += char.encode()
            i += 1
        elif char == "^" and i + 1 < len(key) and "a" <= key[i + 1] <= "z":
            raw += key[i + 1].upper().encode()
            i += 2
        elif char == "%" and len(key[i + 1:i + 3]) == 2 and all(c in "0123456789abcdef" for c in key[i + 1:i + 3]):
            raw.append(int(key[i + 1:i + 3], 16))
            i += 3
        else:
            return None
    try:
        video_id = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        return video_id if video_id and store_key(video_id) == key else None
    except UserError:
        return None
