"""ActivityNet's ResNet-152 frame recipe: the network, its weights, ffmpeg's frame picking, extraction, predict.

The architecture is checked against torchvision's layout written out here from
its rules (names, shapes, 60,192,808 parameters) and against a functional forward
of a state dict in that layout; frame picking against the ``fps`` filter of the
libavfilter PyAV bundles; extraction end to end on tiny generated videos with a
narrow untrained network; predict on a raw video with a checkpoint whose rows
are the recipe's, through the full-size network and a weights file in
torchvision's layout.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import videos
from click.testing import CliRunner
from stage2_store import make_checkpoint

from etspipe.config import load_config
from etspipe.errors import UserError
from etspipe_demo.mp4 import write_mp4
from extract_features import extract_corpus, extract_like_store
from extract_features.fps_filter import fps_filter_count, fps_filter_positions
from extract_features.resnet152 import ResNet152, ResNetInput, build_resnet152, feature_dim
from extract_features.resnet_recipe import resnet_options
from extract_features.video_reader import open_video
from extract_features.weights import load_resnet_weights
from features_store import open_store
from features_store.recipes import RESNET_EXTRACTOR, RESNET_RECIPE, resnet152_store_meta
from pipeline import cli

W = 0.0625  # 1/16 of the width, the full depth: 128-d rows
CFG = load_config(None, [f"extract.width_mult={W}", "extract.batch_size=4", "extract.decode_workers=2",
                         "store.dtype=float32", "store.durable=false"])
RECIPE = "activitynet-resnet152"


# ----------------------------------------------------------------------------- torchvision's layout, from its rules

def torchvision_layout(width: float = 1.0) -> dict[str, tuple[int, ...]]:
    """Name -> shape of torchvision's ``resnet152().state_dict()`` (at `width` of the channels)."""
    def c(n: int) -> int:
        return max(1, round(n * width))

    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, n: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (n,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (c(64), 3, 7, 7)
    bn("bn1", c(64))
    cin = c(64)
    for stage, (blocks, planes) in enumerate(zip((3, 8, 36, 3), (64, 128, 256, 512), strict=True), start=1):
        p = c(planes)
        for b in range(blocks):
            pre = f"layer{stage}.{b}"
            shapes[f"{pre}.conv1.weight"] = (p, cin, 1, 1)
            bn(f"{pre}.bn1", p)
            shapes[f"{pre}.conv2.weight"] = (p, p, 3, 3)
            bn(f"{pre}.bn2", p)
            shapes[f"{pre}.conv3.weight"] = (4 * p, p, 1, 1)
            bn(f"{pre}.bn3", 4 * p)
            if b == 0:
                shapes[f"{pre}.downsample.0.weight"] = (4 * p, cin, 1, 1)
                bn(f"{pre}.downsample.1", 4 * p)
            cin = 4 * p
    shapes["fc.weight"] = (1000, cin)
    shapes["fc.bias"] = (1000,)
    return shapes


def torchvision_state_dict(width: float, seed: int = 1, legacy: bool = False) -> dict[str, torch.Tensor]:
    """Random weights in torchvision's layout, scaled so rows stay finite; `legacy`: no num_batches_tracked
    (files saved before PyTorch 0.4, as torchvision's first resnet152-b121ed2d.pth)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in torchvision_layout(width).items():
        if name.endswith("num_batches_tracked"):
            if not legacy:
                out[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) + 0.5
        elif name.endswith(("running_mean", "bias")):
            out[name] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 4:
            out[name] = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        else:  # BN scales (small on a block's last BN, as trained networks have them) and fc
            small = ".bn3." in name or ".downsample.1." in name
            out[name] = torch.rand(shape, generator=g) * (0.2 if small else 1.0) + (0.0 if small else 0.5)
    return out


def reference_rows(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet-152 forward, functionally, from its state dict; layer4 averaged over space."""
    def bn(h: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)

    h = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    for stage, blocks in enumerate((3, 8, 36, 3), start=1):
        for b in range(blocks):
            p, s = f"layer{stage}.{b}", (2 if stage > 1 and b == 0 else 1)
            out = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=s, padding=1), f"{p}.bn2"))
            out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            short = bn(F.conv2d(h, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1") if b == 0 else h
            h = F.relu(out + short)
    return h.mean(dim=(2, 3))


def test_the_network_has_torchvisions_names_shapes_and_size():
    with torch.device("meta"):
        net = ResNet152()
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == torchvision_layout(1.0)
    assert list(got) == list(torchvision_layout(1.0))  # the same order, so "first mismatch" means the same
    assert sum(p.numel() for p in net.parameters()) == 60_192_808  # torchvision's figure for resnet152
    assert net.out_dim == feature_dim(1.0) == 2048 and feature_dim(W) == 128
    assert not build_resnet152(W).training


def test_a_torchvision_layout_file_loads_as_is_and_gives_torchvisions_rows(tmp_path, one_thread):
    sd = torchvision_state_dict(W, legacy=True)
    path = tmp_path / "resnet152-w.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)  # a DataParallel save loads too
    net = build_resnet152(W)
    sha = load_resnet_weights(net, path)
    assert len(sha) == 64
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(net(x).numpy(), reference_rows(sd, x).numpy(), rtol=1e-4, atol=1e-5)
    # the input transform: RGB, /255, ImageNet mean and std, whole frame, channels-last or not
    frames = torch.randint(0, 256, (2, 1, 6, 8, 3), dtype=torch.uint8)
    want = (frames[:, 0].permute(0, 3, 1, 2).float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for channels_last in (False, True):
        torch.testing.assert_close(ResNetInput(channels_last)(frames), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, words", [
    (lambda sd: sd.pop("layer3.20.conv2.weight"), "it has no layer3.20.conv2.weight (ResNet-152 needs (16, 16, 3, 3))"),
    (lambda sd: sd.update({"layer2.0.conv1.weight": torch.zeros(8, 16, 3, 3)}),
     "layer2.0.conv1.weight has shape (8, 16, 3, 3), ResNet-152 needs (8, 16, 1, 1)"),
    (lambda sd: sd.update({"layer5.0.conv1.weight": torch.zeros(1)}), "unexpected key layer5.0.conv1.weight"),
    (lambda sd: [sd.pop(k) for k in [k for k in sd if k.startswith("layer3.") and int(k.split(".")[1]) >= 6]],
     "it has no layer3.6.conv1.weight"),  # ResNet-50's layer3 (6 blocks)
])
def test_a_file_that_does_not_fit_is_one_line_naming_the_first_mismatch(tmp_path, change, words):
    sd = torchvision_state_dict(W)
    change(sd)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(UserError) as err:
        load_resnet_weights(build_resnet152(W), path)
    assert words in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


# ----------------------------------------------------------------------------- frames as ffmpeg's fps=5 picks them

def _through_fps_filter(frames: list[av.VideoFrame], time_base: Fraction, rate: str = "5") -> list[av.VideoFrame]:
    """The frames libavfilter's ``fps`` filter outputs, end of stream at the last frame's end (as the ffmpeg
    command line sends it since 6.1)."""
    graph = av.filter.Graph()
    first = frames[0]
    src = graph.add_buffer(width=first.width, height=first.height, format=first.format.name, time_base=time_base)
    fps, sink = graph.add("fps", rate), graph.add("buffersink")
    src.link_to(fps)
    fps.link_to(sink)
    graph.configure()
    out = []

    def drain():
        while True:
            try:
                out.append(graph.pull())
            except (av.BlockingIOError, av.EOFError):
                return

    for frame in frames:
        graph.push(frame)
        drain()
    graph.push(None)
    drain()
    return out


def _marked(j: int) -> av.VideoFrame:
    a = np.zeros((8, 8, 3), np.uint8)
    a[..., 0], a[..., 1] = j % 256, j // 256
    return av.VideoFrame.from_ndarray(a, format="rgb24")


@pytest.mark.parametrize("rate", [30, 25, Fraction(30000, 1001), 24, Fraction(24000, 1001), 60, 12, 5, 2])
def test_picked_frames_are_the_ones_ffmpegs_fps_filter_keeps(rate):
    rate = Fraction(rate)
    for n in (1, 2, 3, 7, 31, 62, 63, 151):
        frames = []
        for j in range(n):
            f = _marked(j)
            f.pts, f.time_base, f.duration = j, 1 / rate, 1
            frames.append(f)
        kept = [int(o.to_ndarray()[0, 0, 0]) + 256 * int(o.to_ndarray()[0, 0, 1])
                for o in _through_fps_filter(frames, 1 / rate)]
        ours = fps_filter_positions(n, float(rate), 5.0).tolist()
        if not kept:  # shorter than half an output interval: ffmpeg keeps nothing, etspipe its first kept frame
            assert ours == [min(n - 1, math.ceil(rate / 10) - 1)] and fps_filter_count(n, float(rate), 5) == 1
        else:
            assert ours == kept, (rate, n)


def test_the_kept_frame_is_the_last_one_rounding_to_the_tick_not_the_nearest():
    # at 30 fps frames 0, 1, 2 all round to tick 0 (t < 0.1 s) and the last of them is shown
    assert fps_filter_positions(31, 30, 5).tolist() == [2, 8, 14, 20, 26]
    assert fps_filter_positions(30, 25, 5).tolist() == [2, 7, 12, 17, 22, 27]
    assert fps_filter_positions(30, 30000 / 1001, 5).tolist() == [2, 8, 14, 20, 26]
    assert fps_filter_positions(30, 24, 5).tolist() == [2, 7, 11, 16, 21, 26]
    assert fps_filter_count(63, 30, 5) == 11 and fps_filter_count(62, 30, 5) == 10  # round(10.5) is 11


def test_a_real_file_gives_the_frames_ffmpeg_gives_and_the_reader_reads_only_those(tmp_path):
    rate = Fraction(30000, 1001)
    path = tmp_path / "v_ntsc.mp4"
    write_mp4(path, (videos.synthetic_frame(i, 32, 48) for i in range(47)), rate, crf=12, preset="ultrafast",
              time_base=1 / rate)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        tb = stream.time_base
    pixels = [f.to_ndarray(format="rgb24") for f in decoded]
    kept = [next(j for j, p in enumerate(pixels) if np.array_equal(p, o.to_ndarray(format="rgb24")))
            for o in _through_fps_filter(decoded, tb)]
    reader = open_video(path, (240, 320))
    ours = fps_filter_positions(reader.info.n_frames, reader.info.fps, 5.0)
    assert ours.tolist() == kept and len(kept) == round(47 * 5 / float(rate))
    sparse = reader.read(ours)  # decord seeks/skips to the kept frames only
    reader.close()
    dense = open_video(path, (240, 320))
    every = dense.read(np.arange(dense.info.n_frames))
    dense.close()
    assert np.array_equal(sparse, every[ours])


def test_frames_are_resized_to_320x240_without_keeping_the_aspect_ratio(tmp_path):
    def halves(i: int, h: int, w: int) -> np.ndarray:
        a = np.zeros((h, w, 3), np.uint8)
        a[:, : w // 2] = (230, 20, 20)
        a[:, w // 2 :] = (20, 20, 230)
        return a

    path = videos.write_video(tmp_path / "v_wide.mp4", n_frames=6, size=(64, 256), fps=25, frame_fn=halves)  # 4:1
    reader = open_video(path, (240, 320))
    frame = reader.read(np.array([2]))[0].astype(int)
    reader.close()
    assert frame.shape == (240, 320, 3)
    # stretched, not letterboxed: every row is picture, and the split stays at the middle column
    assert frame[0, 80, 0] > 180 and frame[-1, 80, 0] > 180 and frame[120, 240, 2] > 180
    assert frame[120, 150, 0] > 180 and frame[120, 170, 2] > 180


def test_the_readers_bilinear_scaling_is_close_to_ffmpegs_bicubic(tmp_path):
    path = videos.write_video(tmp_path / "v_hd.mp4", n_frames=4, size=(360, 640), fps=25)
    reader = open_video(path, (240, 320))
    ours = reader.read(np.array([3]))[0].astype(int)
    reader.close()
    with av.open(str(path)) as container:
        frame = list(container.decode(video=0))[3]
    bicubic = frame.reformat(width=320, height=240, format="rgb24", interpolation="BICUBIC").to_ndarray()
    assert np.abs(ours - bicubic.astype(int)).mean() < 1.0  # grey levels (0.34 when written)


# ----------------------------------------------------------------------------- extraction end to end

@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resnet_videos")
    videos.write_video(folder / "v_thirty.mp4", n_frames=45, size=(48, 64), fps=30)  # 1.5 s: 8 rows (7.5 up)
    videos.write_video(folder / "v_pal.mp4", n_frames=26, size=(64, 48), fps=25)  # 1.04 s: 5 rows
    return folder


def bare_rows(path: Path, width: float = W) -> np.ndarray:
    """The network alone on the frames the recipe picks (read densely, then taken)."""
    reader = open_video(path, (240, 320))
    every = reader.read(np.arange(reader.info.n_frames))
    picked = every[fps_filter_positions(reader.info.n_frames, reader.info.fps, 5.0)]
    reader.close()
    with torch.inference_mode():
        return build_resnet152(width)(ResNetInput()(torch.from_numpy(picked))).numpy()


def test_extract_by_the_recipe_into_a_store_then_resume(clips, tmp_path, caplog, one_thread):
    store = tmp_path / "r.zarr"
    with caplog.at_level(logging.WARNING):
        summary = extract_corpus([str(clips)], str(store), CFG, recipe=RECIPE, progress=False)
    assert summary["done"] == 2 and summary["failed"] == 0
    assert "ResNet-152 has NO WEIGHTS" in caplog.text and "--resnet-weights" in caplog.text
    with open_store(str(store)) as s:
        meta = s.meta
        assert meta["extractor"] == RESNET_EXTRACTOR and meta["recipe"]["name"] == RESNET_RECIPE
        assert (meta["weights"], meta["dim"], meta["fps"], meta["clip_len"], meta["stride"]) == \
            ("untrained", 128, 5.0, 1, 1)
        assert meta["width_mult"] == W and meta["crop"] is None and meta["frame_size"] == [240, 320]
        for vid, n_rows in (("v_thirty", 8), ("v_pal", 5)):
            vmeta = s.video_meta(vid)
            assert s.rows(vid).shape == (n_rows, 128) and vmeta["n_rows"] == n_rows
            assert (vmeta["fps"], vmeta["clip_len"], vmeta["stride"]) == (5.0, 1, 1)  # row i is the frame of i/5 s
            np.testing.assert_allclose(s.rows(vid), bare_rows(clips / f"{vid}.mp4"), rtol=1e-4, atol=1e-5)
    # resume: done videos are skipped, a new one is extracted, and a C3D run into this store is refused
    videos.write_video(tmp_path / "v_new.mp4", n_frames=12, size=(48, 64), fps=24)
    again = extract_corpus([str(clips), str(tmp_path / "v_new.mp4")], str(store), CFG, recipe=RECIPE, progress=False)
    assert (again["done"], again["skipped"]) == (1, 2)
    with pytest.raises(UserError, match="extractor="):
        extract_corpus([str(clips)], str(store), CFG, progress=False)


def test_new_videos_go_into_an_untrained_recipe_store_like_its_own(clips, tmp_path, one_thread):
    store = tmp_path / "own.zarr"
    extract_corpus([str(clips / "v_pal.mp4")], str(store), CFG, recipe=RECIPE, progress=False)
    cfg = load_config(None, ["store.durable=false"])  # the store's width wins over the config's
    got = extract_like_store([clips / "v_thirty.mp4"], store, cfg=cfg)
    assert got[clips / "v_thirty.mp4"].extracted
    with open_store(str(store)) as s:
        np.testing.assert_allclose(s.rows("v_thirty"), bare_rows(clips / "v_thirty.mp4"), rtol=1e-4, atol=1e-5)
    videos.write_video(tmp_path / "v_other.mp4", n_frames=10, size=(48, 64), fps=25)
    refused = extract_like_store([tmp_path / "v_other.mp4"], store, cfg=cfg, weights=str(tmp_path / "w.pth"))
    assert "untrained ResNet-152: leave out --resnet-weights" in refused[tmp_path / "v_other.mp4"].error


@pytest.mark.parametrize("args, words", [
    (["--recipe", RECIPE, "--weights", "c3d.pickle"], "--weights is C3D's"),
    (["--resnet-weights", "r.pth"], "--resnet-weights goes with --recipe activitynet-resnet152"),
    (["--recipe", RECIPE, "--pca", "500"], "--pca is a setting of C3D's features"),
    (["--recipe", RECIPE, "--pca-file", "p.hdf5"], "--pca-file is a setting of C3D's features"),
])
def test_extract_cli_mistakes_are_one_line(clips, tmp_path, args, words):
    result = CliRunner().invoke(cli, ["extract", str(clips), "-o", str(tmp_path / "x.zarr"), *args])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and words in errors[0], result.stderr
    assert not (tmp_path / "x.zarr").exists()


# ----------------------------------------------------------------------------- predict through the recipe

@pytest.fixture(scope="module")
def seed_like_run(tmp_path_factory):
    """A checkpoint whose rows are the recipe's (as an imported seed model's) and a full-size weights file."""
    d = tmp_path_factory.mktemp("seed_run")
    ckpt = make_checkpoint(d / "best.pt", feat_dim=2048, store_meta=resnet152_store_meta())
    weights = d / "resnet152.pth"
    torch.save(torchvision_state_dict(1.0), weights)
    raw = videos.write_video(d / "v_raw.mp4", n_frames=5, size=(48, 64), fps=25)  # 0.2 s: 1 row (full size is slow)
    return ckpt, weights, raw


def test_predict_captions_a_raw_video_through_the_resnet_recipe(seed_like_run, tmp_path):
    ckpt, weights, raw = seed_like_run
    out = tmp_path / "pred"
    base = ["predict", str(raw), "--weights", str(ckpt), "--out", str(out), "-o", "decode.max_len=4"]
    refused = CliRunner().invoke(cli, base)
    assert refused.exit_code == 3 and "pass --resnet-weights resnet152-394f9c45.pth" in refused.output
    assert not (out / "features.zarr").exists()  # nothing written, no empty working store left
    result = CliRunner().invoke(cli, [*base, "--resnet-weights", str(weights)])
    assert result.exit_code == 0, result.output
    assert "v_raw [0.00-" in result.output and "wrote 1 caption(s)" in result.output
    assert "not one of torchvision's IMAGENET1K_V1" in result.stderr  # these weights are not the recipe's file
    with open_store(str(out / "features.zarr")) as s:
        assert s.meta["recipe"]["name"] == RESNET_RECIPE
        rows, vmeta = s.rows("v_raw"), s.video_meta("v_raw")
    assert rows.shape == (1, 2048) and np.isfinite(rows).all() and vmeta["fps"] == 5.0
    assert vmeta["recipe"] == RESNET_RECIPE and len(vmeta["weights"]) == 64
    both = CliRunner().invoke(cli, [*base, "--resnet-weights", str(weights), "--c3d-weights", str(weights)])
    assert both.exit_code == 1 and "not both" in both.stderr


def test_options_of_the_recipe_fix_the_rows_meaning():
    opts = resnet_options(load_config(None, ["extract.fps=10", "extract.clip_len=8", "extract.crop=100"]))
    assert (opts.network, opts.fps, opts.clip_len, opts.stride, opts.crop, opts.frame_size) == \
        ("resnet152", 5.0, 1, 1, None, (240, 320))



def test_a_dask_task_extracts_by_the_recipe(clips, tmp_path, one_thread):
    """What each dask worker runs (`extract --workers/--scheduler`), in this process: the options travel by
    pickle and the worker builds the recipe's network from them (the cluster itself: tests/test_extract.py)."""
    import pickle

    from extract_features.distributed import extract_video_task

    store = tmp_path / "dask.zarr"
    opts = pickle.loads(pickle.dumps(resnet_options(CFG)))
    extract_corpus([str(clips / "v_thirty.mp4")], str(store), CFG, recipe=RECIPE, progress=False)  # the store
    result = extract_video_task("v_pal", str(clips / "v_pal.mp4"), str(store), opts, None, None)
    assert result["status"] == "done" and result["n_rows"] == 5
    with open_store(str(store)) as s:
        np.testing.assert_allclose(s.rows("v_pal"), bare_rows(clips / "v_pal.mp4"), rtol=1e-4, atol=1e-5)
