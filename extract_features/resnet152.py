"""torchvision's ResNet-152 and the input of ActivityNet's frame features; nothing else.

Why this network: ActivityNet's frame-level features (the seed's input,
``resnet152_features_activitynet_5fps_320x240.pkl``) are layer4 of torchvision's
``resnet152(pretrained=True)`` averaged over space (../shared/SEED.md). To make
rows of that meaning from a user's video, the published weights file
(``resnet152-394f9c45.pth``, IMAGENET1K_V1) must load as it is, so the layout
and the parameter names here are torchvision's, written for this project:

* stem ``conv1`` (7x7, stride 2, 64 channels, no bias), ``bn1``, ReLU, ``maxpool``
  (3x3, stride 2, padding 1);
* ``layer1`` .. ``layer4``: 3, 8, 36 and 3 bottleneck blocks of width 64, 128,
  256, 512 (output 4x that). Each block is ``conv1`` 1x1, ``bn1``, ``conv2`` 3x3
  (the block's stride sits here, torchvision's "v1.5"), ``bn2``, ``conv3`` 1x1,
  ``bn3``, the shortcut added before the last ReLU; the first block of a stage
  projects the shortcut with ``downsample.0`` (1x1 conv, the stride) and
  ``downsample.1`` (BatchNorm). No convolution has a bias;
* ``avgpool`` and ``fc`` (2048 -> 1000) exist only so that a classifier file's
  names all have a home: features never go through ``fc``.

Features (``LAYER``): layer4's output averaged over all its positions, 2048-d.
The whole 240x320 frame goes in (no crop), so layer4 is 8x10 positions.
BatchNorm always runs in eval mode (running statistics; the network is built in
eval mode and the extractor never trains it).

``width_mult`` scales every channel count for fast tests; 1.0 is the real
network and the only width published weights fit. The depth never changes.
"""

from __future__ import annotations

import torch
from torch import nn

LAYER = "layer4-avg"
BLOCKS = (3, 8, 36, 3)  # bottleneck blocks of layer1..layer4: ResNet-152
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
N_CLASSES = 1000
# ImageNet statistics of RGB pixels in [0, 1]: torchvision's pretrained models expect them
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNTRAINED_SEED = 0


def _scaled(n: int, width_mult: float) -> int:
    return max(1, int(round(n * width_mult)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, plus the shortcut; torchvision's names."""

    def __init__(self, in_ch: int, width: int, stride: int, project: bool) -> None:
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                                         nn.BatchNorm2d(out_ch)) if project else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return self.relu(h.add_(shortcut))


class ResNet152(nn.Module):
    """(B, 3, H, W) normalised RGB to (B, out_dim) layer4 features averaged over space."""

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        self.width_mult = width_mult
        stem = _scaled(64, width_mult)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = stem
        for stage, (n_blocks, width) in enumerate(zip(BLOCKS, WIDTHS, strict=True), start=1):
            width = _scaled(width, width_mult)
            stride = 1 if stage == 1 else 2
            blocks = []
            for b in range(n_blocks):
                first = b == 0
                blocks.append(Bottleneck(in_ch, width, stride if first else 1,
                                         project=first and (stride != 1 or in_ch != width * EXPANSION)))
                in_ch = width * EXPANSION
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.out_dim = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, N_CLASSES)
        self._init_untrained()

    def _init_untrained(self) -> None:
        """torchvision's initialisation with its ``zero_init_residual`` option (each block's ``bn3`` at 0).

        With torchvision's default (``bn3`` at 1) the 50 residual branches of an
        untrained network add up to rows of ~1e8, past float16's range (the store's
        default dtype, and autocast on a GPU); starting every branch at zero keeps
        untrained rows near 1 and still a function of the frame. Loaded weights
        replace all of it.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return h.mean(dim=(2, 3))  # the recipe's "layer4 averaged over space"; avgpool and fc are not used


def feature_dim(width_mult: float = 1.0) -> int:
    """Size of the features, without building the network."""
    return _scaled(WIDTHS[-1], width_mult) * EXPANSION


def build_resnet152(width_mult: float = 1.0, seed: int = UNTRAINED_SEED) -> ResNet152:
    """A ResNet-152 in eval mode, initialised from a fixed seed (load weights with `load_resnet_weights`).

    The seed makes the untrained network the same in every process (a resumed run,
    a dask worker, predict's extraction), as for C3D.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet152(width_mult).eval()


class ResNetInput:
    """uint8 RGB frames (B, 1, H, W, 3) or (B, H, W, 3) to the network's input (B, 3, H, W).

    torchvision's pretrained ResNets expect RGB scaled to [0, 1] minus the
    ImageNet mean, divided by its std; done as one multiply and one subtract
    per channel on the float copy. The frames are channels-last already, so a
    channels-last network takes the permuted view with no layout copy.
    """

    def __init__(self, channels_last: bool = False) -> None:
        self.channels_last = channels_last
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD])
        self._shift = torch.tensor([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() == 5:  # the runner's one-frame clips
            frames = frames[:, 0]
        if self._scale.device != frames.device:
            self._scale, self._shift = self._scale.to(frames.device), self._shift.to(frames.device)
        x = frames.float()
        x.mul_(self._scale).sub_(self._shift)
        x = x.permute(0, 3, 1, 2)  # B, 3, H, W
        return x if self.channels_last else x.contiguous()

    def describe(self) -> dict:
        """What the store records as `normalisation` (the recipe's)."""
        return {"channel_order": "rgb", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "scale": 1.0 / 255.0}
