"""Turn the user's INPUTS (files, folders, globs, lists of paths) into videos with ids.

A folder is searched recursively for the common video extensions; a glob is
expanded as given; a text file (.txt/.lst/.list) lists one path per line (blank
lines and `#` comments skipped, relative paths taken from the list's folder).
Anything that matches nothing is a UserError, and so are two files that would
get the same video id (their features would overwrite each other).

File systems hold odd things under a video's name: a folder called `x.mp4`, a
symbolic link that points at itself or at nothing, a file nobody may read.
Each such entry is kept as an input and `input_problem` says what is wrong
with it, so the corpus records it as that video's failure (one line) instead
of dropping it silently or stopping on a traceback. A sub-folder that cannot
be listed is one warning line; the rest of the folder is still searched, and
symbolic links that lead back into a folder already searched are not followed
again (no endless walk).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
from pathlib import Path

from etspipe.errors import UserError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg",
                              ".flv", ".wmv", ".3gp", ".ts", ".mts", ".ogv"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})


def input_problem(path: Path) -> tuple[str, str] | None:
    """Why `path` cannot be a video file, as (failure reason, detail); None when it is a readable file."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "unreadable", "a symbolic link loop"
        if path.is_symlink():
            return "missing", f"a broken symbolic link (to {os.readlink(path)})"
        if exc.errno == errno.EACCES:
            return "unreadable", "permission denied"
        return "missing", "no such file"
    if os.path.isdir(path):
        return "unreadable", "a folder, not a video file"
    if not os.path.isfile(path):
        return "unreadable", "not a regular file"
    if not os.access(path, os.R_OK):
        return "unreadable", "permission denied"
    return None


def _from_folder(folder: Path) -> list[Path]:
    """Entries named like videos under `folder` (files or not: see `input_problem`), sorted."""
    found: list[Path] = []
    visited: set[str] = set()

    def unreadable(exc: OSError) -> None:
        log.warning("cannot list folder %s (%s); its videos are skipped", exc.filename, exc.strerror or exc)

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a link back into a folder already searched
            log.warning("not following %s: it leads to %s, already searched", root, real)
            dirs[:] = []
            continue
        visited.add(real)
        for name in dirs + files:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(Path(root) / name)
        dirs[:] = [d for d in dirs if Path(d).suffix.lower() not in VIDEO_EXTENSIONS]
    return sorted(found)


def _from_list(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the list of videos {list_file}: {exc}") from None
    paths = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        paths.append(p if p.is_absolute() else list_file.parent / p)
    return paths


def _expand(item: str) -> list[Path]:
    """The videos one input names; UserError when it names none."""
    p = Path(item).expanduser()
    if p.is_dir():
        try:
            os.listdir(p)
        except OSError as exc:
            raise UserError(f"cannot list folder {item}: {exc.strerror or exc}") from None
        videos = _from_folder(p)
        if not videos:
            raise UserError(f"no videos in folder {item} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
        return videos
    if p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
        videos = _from_list(p)
        if not videos:
            raise UserError(f"the list {item} names no videos")
        return videos
    if p.is_file() or p.is_symlink() or p.suffix.lower() in VIDEO_EXTENSIONS and os.path.lexists(p):
        return [p]
    if glob.has_magic(item):
        videos = sorted(Path(m) for m in glob.glob(str(p), recursive=True)
                        if Path(m).is_file() or Path(m).suffix.lower() in VIDEO_EXTENSIONS)
        if not videos:
            raise UserError(f"the pattern {item} matches no files")
        return videos
    raise UserError(f"input not found: {item}")


def collect_videos(inputs: list[str] | tuple[str, ...]) -> list[Path]:
    """Video paths in input order (each input's matches sorted), duplicates removed."""
    if not inputs:
        raise UserError("no inputs: give video files, folders, globs or a text file of paths")
    found: list[Path] = []
    for item in inputs:
        found.extend(_expand(item))
    seen: set[str] = set()
    unique = []
    for v in found:
        key = os.path.realpath(v)  # unlike Path.resolve, never raises on a link loop
        if key not in seen:
            seen.add(key)
            unique.append(v)
    return unique


def assign_ids(videos: list[Path]) -> list[tuple[str, Path]]:
    """(video_id, path) pairs using the store's id rule; a clash of ids is a UserError."""
    from features_store import video_id_from_path

    by_id: dict[str, Path] = {}
    pairs = []
    for path in videos:
        try:
            vid = video_id_from_path(str(path))
        except ValueError as exc:
            raise UserError(f"{path}: cannot make a video id from its name ({exc})") from None
        if vid in by_id:
            raise UserError(f"two inputs give the video id '{vid}': {by_id[vid]} and {path}")
        by_id[vid] = path
        pairs.append((vid, path))
    return pairs
