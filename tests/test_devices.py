"""The one device rule (etspipe.devices): auto picks the GPU only when there is one; mistakes are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from etspipe.config import load_config
from etspipe.devices import device_kind, resolve_device
from etspipe.errors import UserError


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_takes_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch, gpu: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert device_kind("auto") == device_kind(None) == ("cuda" if gpu else "cpu")
    assert device_kind("cpu") == "cpu"
    assert resolve_device("cpu") == torch.device("cpu")


def test_mistakes_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^extract.device is cuda but no CUDA GPU"):
        resolve_device("cuda", "extract.device")
    with pytest.raises(UserError, match=r"^train.device must be auto, cpu or cuda, got 'gpu'"):
        device_kind("gpu", "train.device")


def test_every_stage_uses_the_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages' device entry points all answer as etspipe.devices does (no second copy of the rule)."""
    from caption_model.runs.distributed import DistInfo
    from caption_model.runs.distributed import resolve_device as dist_device
    from extract_features.options import ExtractOptions

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert dist_device("auto", DistInfo()) == torch.device("cpu")
    with pytest.raises(UserError, match="extract.device is cuda"):
        ExtractOptions.from_config(load_config(), device="cuda").torch_device()
    with pytest.raises(UserError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")


def test_importing_the_ground_does_not_import_torch() -> None:
    code = "import sys, etspipe.devices; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
