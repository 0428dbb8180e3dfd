"""Which frames make which clip, and a streaming iterator that cuts a video into clips.

Row `i` of a video covers positions `[i*stride, i*stride + clip_len)` of its frame
sequence (docs/ARCHITECTURE.md, the alignment rule). The frame sequence is the native frames, or,
with a target fps, the native frames picked by index at that rate (nearest frame
at or before each target time), so no interpolated frame is ever invented.

A video shorter than one clip gives one row from a padded clip: its frames, then
its last frame repeated up to `clip_len` ("repeat_last"). This keeps every video
in the store (a caption segment needs at least one row) and is recorded in the
store meta and in the video's meta (`padded: true`).

Only the frames of the clips in flight are held: `iter_clips` reads `chunk_clips`
clips' worth of frames at a time and keeps just the overlap with the next chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

PAD_RULES = ("repeat_last",)


def frame_positions(n_frames: int, native_fps: float, target_fps: float | None) -> np.ndarray:
    """Native frame index of each position of the (possibly resampled) sequence."""
    if not target_fps or abs(target_fps - native_fps) < 1e-6:
        return np.arange(n_frames, dtype=np.int64)
    n_out = int(np.floor(n_frames * target_fps / native_fps + 1e-9))
    idx = np.floor(np.arange(n_out) * native_fps / target_fps + 1e-9).astype(np.int64)
    return np.minimum(idx, n_frames - 1)


def count_clips(n_positions: int, clip_len: int, stride: int) -> int:
    """Rows a sequence of `n_positions` frames gives: full clips, or one padded clip."""
    if n_positions <= 0:
        return 0
    if n_positions < clip_len:
        return 1
    return (n_positions - clip_len) // stride + 1


def clip_positions(clip_index: int, clip_len: int, stride: int, n_positions: int) -> np.ndarray:
    """Positions of one clip, the last position repeated where the sequence ends."""
    pos = clip_index * stride + np.arange(clip_len)
    return np.minimum(pos, n_positions - 1)


def center_crop(frames: np.ndarray, crop: int) -> np.ndarray:
    """Centre `crop` x `crop` of (N, H, W, C) frames (C3D's test-time crop)."""
    h, w = frames.shape[1:3]
    if h < crop or w < crop:
        raise ValueError(f"frames of {h}x{w} are smaller than the crop {crop}")
    top, left = (h - crop) // 2, (w - crop) // 2
    return frames[:, top : top + crop, left : left + crop]


class ClipStream:
    """Iterate `(clip_index, clip)` with clip an (clip_len, crop, crop, 3) uint8 array.

    `crop` None keeps the whole (H, W) = `frame_size` frame (ResNet-152's recipe).

    `reader.read(indices)` must return the frames at increasing native indices
    (fewer if the stream ends early). When the stream ends before its announced
    length, the clips are re-planned for the frames that exist; `n_positions`
    and `n_clips` hold the final figures once iteration is over.
    """

    def __init__(self, reader, positions: np.ndarray, clip_len: int, stride: int, crop: int | None,
                 chunk_clips: int = 8, frame_size: tuple[int, int] | None = None) -> None:
        if crop is None and frame_size is None:
            raise ValueError("a whole-frame stream (crop None) needs the frame_size")
        self.reader = reader
        self.positions = positions
        self.n_positions = len(positions)
        self.clip_len = clip_len
        self.stride = stride
        self.crop = crop
        self.frame_shape = (crop, crop) if crop is not None else tuple(frame_size)
        self.chunk_clips = max(1, chunk_clips)
        self.n_clips = count_clips(self.n_positions, clip_len, stride)
        self.padded = 0 < self.n_positions < clip_len
        self.native_end: int | None = None  # set when the stream ended before its announced length

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        self._buf = np.empty((0, *self.frame_shape, 3), dtype=np.uint8)
        self._buf_start = 0  # position of self._buf[0]
        self._last_native, self._last_frame = -1, None
        clip = 0
        while clip < self.n_clips:
            end_clip = min(clip + self.chunk_clips, self.n_clips)
            need_end = min((end_clip - 1) * self.stride + self.clip_len, self.n_positions)
            self._drop_before(clip * self.stride)
            self._extend_to(need_end)  # may shrink the plan if the stream ends early
            end_clip = min(end_clip, self.n_clips)
            for c in range(clip, end_clip):
                pos = clip_positions(c, self.clip_len, self.stride, self.n_positions) - self._buf_start
                yield c, self._buf[pos]
            clip = end_clip
        self._buf = self._last_frame = None

    def _drop_before(self, first: int) -> None:
        if first > self._buf_start:
            self._buf = self._buf[first - self._buf_start :]
            self._buf_start = first

    def _extend_to(self, need_end: int) -> None:
        """Decode positions up to `need_end` (exclusive) into the buffer."""
        have_end = self._buf_start + len(self._buf)
        if have_end >= need_end:
            return
        native = self.positions[have_end:need_end]
        uniq, inverse = np.unique(native, return_inverse=True)
        reuse = uniq[0] == self._last_native  # resampling can repeat a frame across chunks
        fresh = uniq[1:] if reuse else uniq
        frames = self.reader.read(fresh) if len(fresh) else np.empty((0, 1, 1, 3), np.uint8)
        n_new = len(frames)
        if not n_new:
            frames = self._buf[:0]
        elif self.crop is not None:
            frames = center_crop(frames, self.crop)
        if reuse:
            frames = np.concatenate([self._last_frame[None], frames])
        if len(frames) < len(uniq):  # the stream ended before its announced length
            self._replan(native_end=int(uniq[len(frames)]))
            native = self.positions[have_end:]
            inverse = inverse[: len(native)]
        if len(native):
            self._buf = np.concatenate([self._buf, frames[inverse]])
            self._last_native, self._last_frame = int(uniq[len(frames) - 1]), frames[-1].copy()

    def _replan(self, native_end: int) -> bool:
        """The stream holds only native frames < native_end: shrink the plan. False if nothing is left."""
        self.native_end = native_end
        self.n_positions = int(np.searchsorted(self.positions, native_end, side="left"))
        self.positions = self.positions[: self.n_positions]
        self.n_clips = count_clips(self.n_positions, self.clip_len, self.stride)
        self.padded = 0 < self.n_positions < self.clip_len
        return self.n_clips > 0
