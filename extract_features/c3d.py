"""The C3D network (Sports-1M layout) and its input transform; nothing else.

Layout (Tran et al., ICCV 2015, "Learning Spatiotemporal Features with 3D
Convolutional Networks"): eight 3x3x3 convolutions conv1, conv2, conv3a/b,
conv4a/b, conv5a/b with 64, 128, 256, 256, 512, 512, 512, 512 channels, five max
pools (the first 1x2x2 so early temporal information survives, the rest
2x2x2), fc6 and fc7 of 4096 and fc8 over the 487 Sports-1M classes. The
parameter names are those of the widely used PyTorch port (DavideA/c3d-pytorch,
``conv1.weight`` ... ``fc8.bias``), whose converted Caffe weights therefore load
as they are. pool5 pads (0, 1, 1) as in that port, so a 16x112x112 clip gives a
512x1x4x4 = 8192 pool5 vector.

Features: ``fc7`` (after ReLU; dropout is never applied, features come from an
eval-mode network) is the classic C3D descriptor and the default; ``fc6`` (after
ReLU) and ``pool5`` (flattened) on request.

``width_mult`` scales every channel count and fc width for fast tests and CPU
demos; 1.0 is the real network and the only width published weights fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

LAYERS = ("fc7", "fc6", "pool5")
N_CLASSES = 487
_CONVS = (("conv1", 64), ("conv2", 128), ("conv3a", 256), ("conv3b", 256),
          ("conv4a", 512), ("conv4b", 512), ("conv5a", 512), ("conv5b", 512))
_POOL_AFTER = {"conv1": (1, 2, 2), "conv2": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2)}


def _scaled(n: int, width_mult: float) -> int:
    return max(1, int(round(n * width_mult)))


class C3D(nn.Module):
    """C3D over (B, 3, 16, 112, 112) clips; `forward` returns the `layer` features."""

    def __init__(self, layer: str = "fc7", width_mult: float = 1.0) -> None:
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        self.layer = layer
        self.width_mult = width_mult
        in_ch = 3
        for name, out in _CONVS:
            out = _scaled(out, width_mult)
            setattr(self, name, nn.Conv3d(in_ch, out, kernel_size=3, padding=1))
            in_ch = out
        self.pool5_dim = in_ch * 1 * 4 * 4
        fc = _scaled(4096, width_mult)
        self.fc6 = nn.Linear(self.pool5_dim, fc)
        self.fc7 = nn.Linear(fc, fc)
        self.fc8 = nn.Linear(fc, N_CLASSES)
        self.relu = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
        self.fc_dim = fc

    @property
    def out_dim(self) -> int:
        return self.pool5_dim if self.layer == "pool5" else self.fc_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name, _ in _CONVS:
            h = self.relu(getattr(self, name)(h))
            if name in _POOL_AFTER:
                k = _POOL_AFTER[name]
                h = nn.functional.max_pool3d(h, kernel_size=k, stride=k)
        h = self.pool5(h)
        h = h.flatten(1)  # (C, T, H, W) order, as the port's view(-1, 8192)
        if self.layer == "pool5":
            return h
        h = self.relu(self.fc6(h))
        if self.layer == "fc6":
            return h
        return self.relu(self.fc7(h))


def feature_dim(layer: str = "fc7", width_mult: float = 1.0) -> int:
    """Size of the `layer` features, without building the network."""
    if layer == "pool5":
        return _scaled(512, width_mult) * 16
    return _scaled(4096, width_mult)


UNTRAINED_SEED = 0


def build_c3d(layer: str = "fc7", width_mult: float = 1.0, seed: int = UNTRAINED_SEED) -> C3D:
    """A C3D in eval mode, initialised from a fixed seed (load weights with `load_c3d_weights`).

    The seed makes the untrained network the same in every process, so a resumed
    run, a dask worker and `extract_one` all produce the same untrained features.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return C3D(layer=layer, width_mult=width_mult).eval()


class C3DInput:
    """uint8 RGB clips (B, T, H, W, 3) to the network's float input (B, 3, T, H, W).

    The Caffe C3D Sports-1M model was trained on frames read with OpenCV, that is
    BGR in 0..255, minus the mean cube ``sport1m_train16_128_mean.binaryproto``
    (facebook/C3D, C3D-v1.0/examples/c3d_feature_extraction), with no scaling.
    The PyTorch port converts those weights unchanged, so it expects the same
    input (DavideA/c3d-pytorch issues #1 and #4: its predict.py feeds RGB without
    the mean, which is wrong). The per-channel means of that mean cube are
    B 90.25, G 97.66, R 101.41; subtracting them instead of the full cube differs
    only by the cube's small spatial variation. These are the defaults
    (channel_order "bgr", mean in that order, scale 1.0). `mean_cube`, a
    (T, crop, crop, 3) array in the network's channel order (the centre of the
    cube, `mean_cube.crop_cube`), is subtracted instead of `mean` when given:
    the Caffe model's own input (`extract.mean_cube`).
    """

    def __init__(self, channel_order: str = "bgr", mean: Sequence[float] = (90.25, 97.66, 101.41),
                 scale: float = 1.0, channels_last: bool = False, mean_cube: np.ndarray | None = None) -> None:
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        if len(mean) != 3:
            raise ValueError(f"mean must have 3 values, got {list(mean)}")
        self.channel_order = channel_order
        self.mean = [float(m) for m in mean]
        self.scale = float(scale)
        self.mean_cube = None if mean_cube is None else torch.from_numpy(np.asarray(mean_cube, dtype=np.float32))
        # The decoded clips are (B, T, H, W, 3): read as (B, 3, T, H, W) they already ARE
        # channels-last-3d, so a channels-last network takes them with no layout copy at all.
        self.channels_last = channels_last

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        # One float copy in all: the channel swap happens on the uint8 clips (a quarter of
        # the bytes), mean and scale in place, and the permute is a view. NCDHW costs one
        # more copy (`contiguous`), which only a network that is not channels-last wants.
        if self.channel_order == "bgr":
            clips = clips.flip(-1)
        x = clips.float()
        if self.mean_cube is not None:
            if self.mean_cube.device != x.device:
                self.mean_cube = self.mean_cube.to(x.device)
            x.sub_(self.mean_cube)  # (T, H, W, 3) against (B, T, H, W, 3)
        else:
            x.sub_(torch.tensor(self.mean, dtype=x.dtype, device=x.device))
        if self.scale != 1.0:
            x.mul_(self.scale)
        x = x.permute(0, 4, 1, 2, 3)  # B, 3, T, H, W
        return x if self.channels_last else x.contiguous()

    def describe(self) -> dict:
        """What the store records as `normalisation`."""
        return {"channel_order": self.channel_order, "mean": self.mean, "scale": self.scale,
                "pixel_range": [0, 255]}
