"""The GPU-shaped extraction path, exercised on the CPU: input layout, padded batches, one batch in flight.

On CUDA the runner pads every batch to one size (so cudnn.benchmark tunes once)
and keeps one batch in flight while it collects the next. Those are plain logic:
forcing them on a CPU extractor must give exactly the rows of the simple path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import videos

from extract_features.c3d import C3DInput
from extract_features.options import ExtractOptions
from extract_features.runner import make_extractor, run_pipeline

W = 0.0625


def test_channels_last_input_is_the_decoded_layout_with_no_ncdhw_copy():
    clips = torch.randint(0, 256, (2, 16, 112, 112, 3), dtype=torch.uint8)
    ncdhw = C3DInput("bgr")(clips)
    cl = C3DInput("bgr", channels_last=True)(clips)
    assert cl.shape == ncdhw.shape == (2, 3, 16, 112, 112)
    assert torch.equal(cl, ncdhw)
    assert cl.is_contiguous(memory_format=torch.channels_last_3d) and not cl.is_contiguous()
    assert ncdhw.is_contiguous()


def test_channels_last_network_gives_the_ncdhw_features():
    opts = ExtractOptions(width_mult=W)
    ex = make_extractor(opts, warn=False)
    assert ex.transform.channels_last == ex.model.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    clips = np.random.default_rng(0).integers(0, 256, (3, 16, 112, 112, 3), dtype=np.uint8)
    x = C3DInput(opts.channel_order, opts.mean, opts.scale)(torch.from_numpy(clips))
    with torch.inference_mode():
        plain = ex.model.to(memory_format=torch.contiguous_format)(x).numpy()
    np.testing.assert_allclose(ex.forward(clips), plain, rtol=1e-4, atol=1e-5)


def test_padded_batch_gives_the_rows_of_the_unpadded_one():
    ex = make_extractor(ExtractOptions(width_mult=W), warn=False)
    clips = np.random.default_rng(1).integers(0, 256, (3, 16, 112, 112, 3), dtype=np.uint8)
    plain = ex.forward(clips)
    ex.pad_batches, ex.lookahead = True, 1
    seen = []
    ex.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    first = ex.start(list(clips), pad_to=8)
    second = ex.start(list(clips[:2]), pad_to=8)  # the other buffer: `first` is not overwritten
    np.testing.assert_allclose(ex.finish(first), plain, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ex.finish(second), plain[:2], rtol=1e-4, atol=1e-5)
    assert seen == [8, 8]


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory) -> list[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("dev_path")
    return [(f"v{n}", videos.write_video(d / f"v{n}.mp4", n_frames=n)) for n in (40, 57, 24)]


def _rows(extractor, jobs, batch_size: int) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {}

    def failed(vid, reason, detail):
        raise AssertionError(f"{vid}: {reason} {detail}")

    counts = run_pipeline(jobs, extractor, lambda vid, r, _m: rows.__setitem__(vid, r.copy()), failed,
                          progress=False, batch_size=batch_size, decode_workers=2)
    assert counts["done"] == len(jobs)
    return rows


def test_one_batch_in_flight_and_padding_give_the_same_rows(three_videos):
    ex = make_extractor(ExtractOptions(width_mult=W), warn=False)
    simple = _rows(ex, three_videos, batch_size=5)  # 4 + 6 + 2 clips: the last batch is short
    ex.pad_batches, ex.lookahead = True, 1
    seen = []
    ex.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    deferred = _rows(ex, three_videos, batch_size=5)
    assert set(seen) == {5} and len(seen) == 3  # every batch at one size: no re-tuning per last batch
    assert simple.keys() == deferred.keys()
    for vid in simple:
        assert simple[vid].shape[0] > 0
        np.testing.assert_allclose(deferred[vid], simple[vid], rtol=1e-4, atol=1e-5)


def test_cpu_precision_is_bf16_only_when_asked_and_native(monkeypatch, caplog):
    import extract_features.options as options

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(options, "cpu_has_native_bf16", lambda: True)
    assert ExtractOptions(precision="auto").autocast_dtype(cpu) is None
    assert ExtractOptions(precision="bf16").autocast_dtype(cpu) is torch.bfloat16
    assert ExtractOptions(precision="auto").autocast_dtype(cuda) is torch.bfloat16
    assert ExtractOptions(precision="fp16").autocast_dtype(cuda) is torch.float16
    assert ExtractOptions(precision="fp32").autocast_dtype(cuda) is None
    monkeypatch.setattr(options, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        assert ExtractOptions(precision="bf16").autocast_dtype(cpu) is None
    assert "emulated" in caplog.text
