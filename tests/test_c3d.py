"""The C3D network, its input transform and safe weight loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from etspipe.errors import UserError
from extract_features import C3D, C3DInput, build_c3d, feature_dim, load_c3d_weights
from extract_features.weights import file_sha256

PORT_SHAPES = {  # DavideA/c3d-pytorch's parameter names and shapes (Sports-1M, 487 classes)
    "conv1.weight": (64, 3, 3, 3, 3), "conv2.weight": (128, 64, 3, 3, 3),
    "conv3a.weight": (256, 128, 3, 3, 3), "conv3b.weight": (256, 256, 3, 3, 3),
    "conv4a.weight": (512, 256, 3, 3, 3), "conv4b.weight": (512, 512, 3, 3, 3),
    "conv5a.weight": (512, 512, 3, 3, 3), "conv5b.weight": (512, 512, 3, 3, 3),
    "fc6.weight": (4096, 8192), "fc7.weight": (4096, 4096), "fc8.weight": (487, 4096), "fc8.bias": (487,),
}


def test_full_size_network_has_the_ports_names_and_shapes():
    with torch.device("meta"):  # shapes only: no 78M parameters allocated, no 77 GFLOP forward
        model = C3D(layer="pool5")
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert len(shapes) == 22  # 11 layers, weight and bias each
        for key, shape in PORT_SHAPES.items():
            assert shapes[key] == shape
        clip = torch.empty(1, 3, 16, 112, 112)
        assert model(clip).shape == (1, 8192)
        for layer in ("fc6", "fc7"):
            model.layer = layer
            assert model(clip).shape == (1, 4096)
    assert feature_dim("fc7") == 4096 and feature_dim("pool5") == 8192


@pytest.mark.parametrize("layer", ["fc7", "fc6", "pool5"])
def test_small_network_layers(layer):
    torch.manual_seed(0)
    model = build_c3d(layer, width_mult=0.125)
    assert not model.training
    x = torch.randn(2, 3, 16, 112, 112)
    out = model(x)
    assert out.shape == (2, feature_dim(layer, 0.125)) == (2, model.out_dim)
    if layer != "pool5":
        assert (out >= 0).all()  # after ReLU
    assert torch.allclose(model(x), out)  # eval: no dropout


def test_input_transform_bgr_mean_scale():
    clip = torch.zeros(1, 16, 112, 112, 3, dtype=torch.uint8)
    clip[..., 0] = 200  # red
    x = C3DInput("bgr", (90.25, 97.66, 101.41), 1.0)(clip)
    assert x.shape == (1, 3, 16, 112, 112)
    assert x[0, 2, 0, 0, 0].item() == pytest.approx(200 - 101.41)  # red is the third channel in BGR
    assert x[0, 0, 0, 0, 0].item() == pytest.approx(-90.25)
    y = C3DInput("rgb", (0, 0, 0), 0.5)(clip)
    assert y[0, 0, 0, 0, 0].item() == 100.0


def test_weights_round_trip_and_checksum(tmp_path):
    torch.manual_seed(1)
    src = build_c3d("fc7", 0.125)
    path = tmp_path / "c3d.pth"
    torch.save(src.state_dict(), path)
    dst = build_c3d("fc7", 0.125)
    sha = load_c3d_weights(dst, path)
    assert sha == file_sha256(path) and len(sha) == 64
    x = torch.randn(1, 3, 16, 112, 112)
    assert torch.equal(src(x), dst(x))


def test_weights_without_fc8_and_with_module_prefix_load(tmp_path):
    """DataParallel's `module.` prefix is dropped and every tensor lands on its layer; fc8 (never used for
    features) may be absent and then keeps the network's own values."""
    source = build_c3d("fc7", 0.125, seed=7)  # not the untrained network's seed: loading must change values
    state = {f"module.{k}": v for k, v in source.state_dict().items() if not k.startswith("fc8")}
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    dst = build_c3d("fc7", 0.125)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    load_c3d_weights(dst, tmp_path / "w.pth")
    loaded = dst.state_dict()
    for key, tensor in source.state_dict().items():
        if key.startswith("fc8."):
            assert torch.equal(loaded[key], before[key]), key
        else:
            assert not torch.equal(before[key], tensor), key  # the two networks differ before loading
            assert torch.equal(loaded[key], tensor), key


def test_wrong_keys_are_a_user_error(tmp_path):
    state = build_c3d("fc7", 0.125).state_dict()
    state["conv9.weight"] = state.pop("conv5b.weight")
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(UserError, match="conv5b.weight"):
        load_c3d_weights(build_c3d("fc7", 0.125), tmp_path / "w.pth")


def test_wrong_shapes_are_a_user_error(tmp_path):
    torch.save(build_c3d("fc7", 0.25).state_dict(), tmp_path / "w.pth")
    with pytest.raises(UserError, match="shape"):
        load_c3d_weights(build_c3d("fc7", 0.125), tmp_path / "w.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"conv1.weight": _Evil()}, fh, protocol=2)
    with pytest.raises(UserError, match="refused"):
        load_c3d_weights(build_c3d("fc7", 0.125), path)


def test_not_a_weights_file(tmp_path):
    (tmp_path / "w.pth").write_text("hello")
    with pytest.raises(UserError, match="w.pth"):
        load_c3d_weights(build_c3d("fc7", 0.125), tmp_path / "w.pth")
    with pytest.raises(UserError, match="not found"):
        load_c3d_weights(build_c3d("fc7", 0.125), tmp_path / "missing.pth")
