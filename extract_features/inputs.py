"""Turn the user's INPUTS (files, folders, globs, lists of paths) into videos with ids.

A folder is searched recursively for the common video extensions; a glob is
expanded as given; a text file (.txt/.lst/.list) lists one path per line (blank
lines and `#` comments skipped, relative paths taken from the list's folder).
Anything that matches nothing is a UserError, and so are two files that would
get the same video id (their features would overwrite each other).
"""

from __future__ import annotations

import glob
from pathlib import Path

from etspipe.errors import UserError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg",
                              ".flv", ".wmv", ".3gp", ".ts", ".mts", ".ogv"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})


def _from_folder(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


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


def collect_videos(inputs: list[str] | tuple[str, ...]) -> list[Path]:
    """Video paths in input order (each input's matches sorted), duplicates removed."""
    if not inputs:
        raise UserError("no inputs: give video files, folders, globs or a text file of paths")
    found: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            videos = _from_folder(p)
            if not videos:
                raise UserError(f"no videos in folder {item} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            videos = _from_list(p)
            if not videos:
                raise UserError(f"the list {item} names no videos")
        elif p.is_file():
            videos = [p]
        elif glob.has_magic(item):
            videos = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not videos:
                raise UserError(f"the pattern {item} matches no files")
        else:
            raise UserError(f"input not found: {item}")
        found.extend(videos)
    seen: set[Path] = set()
    unique = []
    for v in found:
        key = v.resolve()
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
