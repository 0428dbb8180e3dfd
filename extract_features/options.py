"""Extraction settings, read once from the config's `extract` and `store` sections.

One frozen dataclass travels from the CLI to the runner and to dask workers
(it pickles), so every part of a run sees the same settings and the store meta
is written from exactly what was used.

`network` says which network makes the rows: C3D (the config's `extract`
section describes it) or ResNet-152 for ActivityNet's frame recipe, whose
geometry is fixed by the recipe (`resnet_recipe.resnet_options`).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass

import torch

from etspipe.devices import cpu_has_native_bf16, resolve_device
from etspipe.errors import UserError
from extract_features.c3d import LAYERS
from extract_features.clips import PAD_RULES
from extract_features.resnet152 import LAYER as RESNET_LAYER
from features_store.anet_pca import U_LAYOUTS

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
NETWORKS = ("c3d", "resnet152")
log = logging.getLogger(__name__)


@functools.cache
def _warn_cpu_fp32(precision: str) -> None:
    log.warning("extract.precision %s: this CPU has no native %s, where it is emulated and far slower; "
                "running fp32", precision, precision)
DEVICES = ("auto", "cpu", "cuda")


# field -> (config section, key): every one is read from the loaded config, whose keys and defaults
# live in configs/ets.yaml only
_CONFIG_KEYS = {
    "clip_len": ("extract", "clip_len"), "stride": ("extract", "stride"), "fps": ("extract", "fps"),
    "frame_size": ("extract", "frame_size"), "crop": ("extract", "crop"), "layer": ("extract", "layer"),
    "width_mult": ("extract", "width_mult"), "channel_order": ("extract", "channel_order"),
    "mean": ("extract", "mean"), "scale": ("extract", "scale"), "pad_short": ("extract", "pad_short"),
    "batch_size": ("extract", "batch_size"), "decode_workers": ("extract", "decode_workers"),
    "precision": ("extract", "precision"), "pca_dim": ("extract", "pca_dim"), "device": ("extract", "device"),
    "store_dtype": ("store", "dtype"), "chunk_rows": ("store", "chunk_rows"), "store_durable": ("store", "durable"),
    "video_backend": ("extract", "video_backend"), "mean_cube": ("extract", "mean_cube"),
    "pca_file_dim": ("extract", "pca_file_dim"), "pca_file_u": ("extract", "pca_file_u"),
}


@dataclass(frozen=True)
class ExtractOptions:
    """The settings of one extraction; the meaning and default of each is in configs/ets.yaml.

    With ``network="resnet152"`` the frames go whole into the network (``crop`` None)
    and its input is the recipe's fixed ImageNet normalisation: ``channel_order``,
    ``mean``, ``scale``, ``mean_cube`` and ``pad_short`` describe C3D's input only.
    """

    clip_len: int
    stride: int
    fps: float | None
    frame_size: tuple[int, int]
    crop: int | None
    layer: str
    width_mult: float
    channel_order: str
    mean: tuple[float, float, float]
    scale: float
    pad_short: str
    batch_size: int
    decode_workers: int
    precision: str
    pca_dim: int | None
    device: str
    store_dtype: str
    chunk_rows: int
    store_durable: bool
    video_backend: str
    mean_cube: str | None
    pca_file_dim: int
    pca_file_u: str
    network: str = "c3d"

    @classmethod
    def from_config(cls, cfg: dict, **changes) -> ExtractOptions:
        """Options from a loaded config (`etspipe.config.load_config`, which holds every key) and `changes`.

        A config that lacks a key is a mistake of the caller, not a reason to
        fall back to a second copy of the default: it is a UserError naming the key.
        """
        kw = {}
        for name, (section, key) in _CONFIG_KEYS.items():
            if name in changes:
                continue
            try:
                kw[name] = cfg[section][key]
            except (KeyError, TypeError):
                raise UserError(f"the config has no {section}.{key} (load it with etspipe.config.load_config, "
                                "which fills in every key of configs/ets.yaml)") from None
        kw.update(changes)
        kw["frame_size"] = tuple(int(v) for v in kw["frame_size"])
        kw["mean"] = tuple(float(v) for v in kw["mean"])
        opts = cls(**kw)
        opts.validate()
        return opts

    def validate(self) -> None:
        def bad(key: str, why: str) -> UserError:
            return UserError(f"extract.{key}: {why}")

        if self.clip_len < 1:
            raise bad("clip_len", f"must be at least 1, got {self.clip_len}")
        if self.stride < 1:
            raise bad("stride", f"must be at least 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise bad("fps", f"must be positive or null, got {self.fps}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}")
        if self.network == "resnet152":
            self._validate_resnet()
        else:
            self._validate_c3d(bad)
        if not 0 < self.width_mult <= 1.0:
            raise bad("width_mult", f"must be in (0, 1], got {self.width_mult}")
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise bad("frame_size", f"must be [H, W] of positive sizes, got {list(self.frame_size)}")
        if self.channel_order not in ("bgr", "rgb"):
            raise bad("channel_order", f"must be bgr or rgb, got {self.channel_order!r}")
        if len(self.mean) != 3:
            raise bad("mean", f"must hold 3 values, got {list(self.mean)}")
        if self.pad_short not in PAD_RULES:
            raise bad("pad_short", f"must be one of {', '.join(PAD_RULES)}, got {self.pad_short!r}")
        if self.batch_size < 0:
            raise bad("batch_size", f"must be 0 (auto) or positive, got {self.batch_size}")
        if self.decode_workers < 0:
            raise bad("decode_workers", f"must be 0 (auto) or positive, got {self.decode_workers}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise bad("device", f"must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise bad("pca_dim", f"must be positive or null, got {self.pca_dim}")
        if self.store_dtype not in ("float16", "float32"):
            raise UserError(f"store.dtype: must be float16 or float32, got {self.store_dtype!r}")
        if self.mean_cube is not None and not str(self.mean_cube).strip():
            raise bad("mean_cube", "must be a file or null, got an empty name")
        if self.pca_file_dim < 1:
            raise bad("pca_file_dim", f"must be at least 1, got {self.pca_file_dim}")
        if self.pca_file_u not in U_LAYOUTS:
            raise bad("pca_file_u", f"must be one of {', '.join(U_LAYOUTS)}, got {self.pca_file_u!r}")
        if self.video_backend not in ("auto", "decord", "pyav"):
            raise bad("video_backend", f"must be auto, decord or pyav, got {self.video_backend!r}")

    def _validate_c3d(self, bad) -> None:
        if self.crop is None or len(self.frame_size) != 2 or min(self.frame_size) < self.crop:
            raise bad("frame_size", f"must be [H, W] no smaller than crop {self.crop}, got {list(self.frame_size)}")
        if self.layer not in LAYERS:
            raise bad("layer", f"must be one of {', '.join(LAYERS)}, got {self.layer!r}")
        if self.crop != 112 or self.clip_len != 16:
            # C3D's fc6 expects pool5 of 512x1x4x4, which only a 16x112x112 clip gives
            raise bad("crop" if self.crop != 112 else "clip_len",
                      f"C3D needs 16-frame 112x112 clips (clip_len 16, crop 112), got {self.clip_len}, {self.crop}")

    def _validate_resnet(self) -> None:
        """The recipe fixes these (`resnet_recipe.resnet_options` sets them): anything else is a caller's bug."""
        if (self.clip_len, self.stride, self.crop, self.layer, self.pca_dim) != (1, 1, None, RESNET_LAYER, None):
            raise ValueError("ResNet-152 takes single whole frames (clip_len 1, stride 1, crop None, layer "
                             f"{RESNET_LAYER}, no PCA); got {self.clip_len}, {self.stride}, {self.crop}, "
                             f"{self.layer}, {self.pca_dim}")

    def torch_device(self) -> torch.device:
        return resolve_device(self.device, "extract.device")

    def resolved_batch_size(self, device: torch.device) -> int:
        return self.batch_size or (128 if device.type == "cuda" else 16)

    def resolved_decode_workers(self) -> int:
        return self.decode_workers or max(1, os.cpu_count() or 1)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype of the network, None for plain fp32.

        auto: bf16 on CUDA, fp32 on a CPU. A CPU runs bf16 only when asked
        (`bf16`) and it has native bf16; emulated bf16 ran C3D >50x slower than
        fp32 on the AVX2 machine, and no native-bf16 CPU has been measured yet
        (docs/PERFORMANCE.md, Extraction). fp16 is CUDA only.
        """
        if self.precision == "fp32":
            return None
        if device.type == "cuda":
            return torch.float16 if self.precision == "fp16" else torch.bfloat16
        if self.precision == "bf16" and cpu_has_native_bf16():
            return torch.bfloat16
        if self.precision in ("bf16", "fp16"):
            _warn_cpu_fp32(self.precision)
        return None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        d["mean"] = list(self.mean)
        return d
