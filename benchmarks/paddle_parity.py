"""Golden fixtures for ETS computed with PaddlePaddle's own kernels (run ONLY in the paddle venv).

    /work/paddle_venv/bin/python benchmarks/paddle_parity.py            # writes tests/fixtures/*
    /work/paddle_venv/bin/python benchmarks/paddle_parity.py --check    # compares, writes nothing

The venv is outside the project (``python3 -m venv /work/paddle_venv && pip install paddlepaddle
numpy``; checked with paddlepaddle 3.3.1, CPU wheel). Paddle is not a project dependency: the tests
read the .npz files and never import paddle. Inputs and weights come from ``tests/seed_net_golden.py``
(imported by path), which also holds the float64 numpy reference this script re-verifies.

Kernels used (eager mode; a LoD is set on a tensor with ``t.value().get_tensor().set_lod([[0, ...]])``):

* ``paddle._C_ops.gru(input, h0, weight, bias, activation, gate_activation, is_reverse, origin_mode,
  is_test) -> hidden``: called as ``gru(x_proj_with_lod, None, w, b, "tanh", "sigmoid", rev, False,
  False)`` on all segments at once (one LoD level, sequences of different lengths), which is what
  ``fluid.layers.dynamic_gru`` appends (the kernel itself reorders the sequences into its
  length-sorted batch layout, sequence2batch, and back). ``h0=None`` is zeros.
* ``paddle._C_ops.gru_unit(input, hidden_prev, weight, bias, activation, gate_activation,
  origin_mode) -> hidden``: ``gru_unit(g, h, w, b, 2, 1, False)`` (2 = tanh, 1 = sigmoid).
* ``paddle._legacy_C_ops.sequence_softmax(x_with_lod) -> out`` (x of shape [sum T, 1]); both
  softmaxes over time (pooling and attention) use it.
* ``paddle._C_ops.sequence_pool(x_with_lod, is_test, "SUM", 0.0) -> out`` for the two weighted sums.
* ``paddle._legacy_C_ops.sequence_expand(x, y_with_lod) -> out`` for the decoder state per row.
* ``paddle._C_ops.embedding(ids, w, -1, False)``; ``paddle.matmul`` for every fc; ``paddle.tanh``;
  ``paddle.nn.functional.softmax`` for the output layer (fc act="softmax"), then ``paddle.log``.
  The decoder runs all segments as one batch over the padded word axis (fluid's StaticRNN after
  sequence_pad with 0.0 embeddings); padded steps are dropped afterwards (sequence_unpad).
No dense stand-in was needed: every sequence op of ets_net.py ran as Paddle's kernel.

Fixture layout (``tests/fixtures/paddle_ets_{small,full}.npz``; Paddle's outputs, float32, plus what
regenerates the inputs): ``sizes_json`` (str), ``param_seed``, ``batch_seed``, ``lengths`` (N),
``n_words`` (N), ``words`` (sum L, int64, concatenated), ``enc`` (sum T, 2hid), ``pool_weights``
(sum T), ``vec`` (N, 2hid), ``proj`` (sum T, dec), ``h0`` (N, dec), ``hidden`` (sum L, dec),
``attn`` (sum_i L_i*T_i, each segment's (L_i, T_i) block flattened row-major, in segment order),
``log_prob_rows`` (indices into the sum L steps), ``log_probs`` (len(log_prob_rows), V), and for every
step ``argmax`` (int64), ``max_log_prob`` and ``target_log_prob`` (log p of the next teacher word;
for a caption's last step the target is <e> = 1, as in training). Weights: ``make_params(sizes,
param_seed)``; inputs: ``make_batch(sizes, batch_seed, lengths, n_words)``.

fluid ``save_params`` layout (written again with Paddle 3.3.1 by ``write_save_params``: static mode,
``paddle.static.save_vars(exe, dirname, main_program, vars=params)`` appends one ``save`` op per
variable, exactly what fluid 1.x ``fluid.io.save_params``/``save_vars`` did; PIR and the legacy program
give identical bytes, and so does ``paddle.base.core.save_dense_tensor``). One file per parameter,
named by the parameter name, no extension, no index file. Each file, little-endian:

    uint32  version = 0                      (LoDTensor/DenseTensor serialization version)
    uint64  lod_level                        (0 for parameters)
            per level: uint64 nbytes, then nbytes/8 uint64 offsets   (e.g. 24, 0, 4, 6)
    uint32  tensor version = 0
    int32   desc_size                        (bytes of the protobuf that follows)
    bytes   VarType.TensorDesc protobuf:     field 1 data_type, varint (tag 0x08):
                                               FP32 = 5 (BOOL 0, INT16 1, INT32 2, INT64 3, FP16 4, FP64 6)
                                             field 2 dims, repeated int64, NOT packed: one tag 0x10
                                               + varint per dim (5200 -> d0 28)
    bytes   raw data, C order, numel * sizeof(dtype)

e.g. fc_4.w_0 [12, 8] float32: ``00000000 0000000000000000 00000000 06000000 08 05 10 0c 10 08`` then
384 data bytes (410 bytes in all); a [12] bias has the 4-byte desc ``08 05 10 0c``. fluid's
``fluid.load(prog, "ETS.pdparams", exe)`` (ets.py's ``load_test_weights``) reads the pickle; the
per-file folder is the other format fluid wrote (``save_params``/``save_persistables``).

``.pdparams``: a plain pickle of ``{name: numpy.ndarray}``. fluid 1.x ``fluid.save`` wrote it with
``pickle.dump(..., protocol=2)`` (from Python 2 the array data are ``str``: Python 3 loads it with
``encoding="latin1"``; numpy 1.x pickles name ``numpy.core.multiarray._reconstruct``). Paddle 3
``paddle.save(dict_of_ndarrays, path)`` writes protocol 4 by default, the same dict and nothing else
(numpy 2 names ``numpy._core.multiarray._reconstruct``); a dict of paddle Tensors instead gains a key
``"StructuredToParameterName@@"``. Written by ``write_pdparams`` to
``tests/fixtures/paddle_params_small.pdparams`` (paddle.save defaults).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _load_golden():
    spec = importlib.util.spec_from_file_location("seed_net_golden", ROOT / "tests" / "seed_net_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


G = _load_golden()

CASES = {
    # name: (sizes, param_seed, batch_seed, lengths, n_words (<s> included), rows of log_probs kept)
    "small": (G.SMALL, 11, 12, [7, 4, 1], [6, 5, 6], None),
    "full": (G.FULL, 21, 22, [300, 41], [10, 9], [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]),
}
OUTPUTS = ("enc", "pool_weights", "vec", "proj", "h0", "hidden", "attn", "log_probs")
TOL = 1e-4


# ----------------------------------------------------------------------------- Paddle forward


def paddle_forward(params: dict, feats, words) -> list[dict]:
    import paddle
    from paddle import _C_ops, _legacy_C_ops

    P = {k: paddle.to_tensor(np.ascontiguousarray(v, np.float32)) for k, v in params.items()}
    lens = [len(f) for f in feats]
    lod = [[0, *np.cumsum(lens).tolist()]]

    def with_lod(t):
        t.value().get_tensor().set_lod(lod)
        return t

    # encoder
    feat = with_lod(paddle.to_tensor(np.concatenate(feats).astype(np.float32)))
    x = paddle.tanh(paddle.matmul(feat, P["fc_0.w_0"]) + P["fc_0.b_0"])
    fwd = _C_ops.gru(
        with_lod(paddle.matmul(x, P["fc_1.w_0"])),
        None,
        P["gru_0.w_0"],
        P["gru_0.b_0"],
        "tanh",
        "sigmoid",
        False,
        False,
        False,
    )
    bwd = _C_ops.gru(
        with_lod(paddle.matmul(x, P["fc_2.w_0"])),
        None,
        P["gru_1.w_0"],
        P["gru_1.b_0"],
        "tanh",
        "sigmoid",
        True,
        False,
        False,
    )
    enc = with_lod(paddle.concat([fwd, bwd], axis=1))
    pool = _legacy_C_ops.sequence_softmax(with_lod(paddle.matmul(enc, P["fc_3.w_0"])))
    vec = _C_ops.sequence_pool(with_lod(enc * pool), False, "SUM", 0.0)
    proj = with_lod(paddle.matmul(enc, P["fc_4.w_0"]))

    # decoder (teacher forcing, all segments in one padded batch)
    h = paddle.tanh(paddle.matmul(vec, P["fc_5.w_0"]))
    h0 = h
    n_seg, l_max = len(words), max(len(w) for w in words)
    emb_dim = params["embedding_0.w_0"].shape[1]
    emb = _C_ops.embedding(
        paddle.to_tensor(np.concatenate(words).astype(np.int64)), P["embedding_0.w_0"], -1, False
    ).numpy()
    padded = np.zeros((l_max, n_seg, emb_dim), np.float32)  # sequence_pad(0.0), then transpose
    row = 0
    for i, w in enumerate(words):
        padded[: len(w), i] = emb[row : row + len(w)]
        row += len(w)
    attn, hidden, probs = [], [], []
    for k in range(l_max):
        state = _legacy_C_ops.sequence_expand(paddle.matmul(h, P["fc_6.w_0"]), proj)
        mixed = proj + state
        a = _legacy_C_ops.sequence_softmax(with_lod(paddle.matmul(mixed, P["fc_7.w_0"])))
        ctx = _C_ops.sequence_pool(with_lod(enc * a), False, "SUM", 0.0)
        g = paddle.matmul(paddle.to_tensor(padded[k]), P["fc_8.w_0"]) + paddle.matmul(ctx, P["fc_8.w_1"])
        h = _C_ops.gru_unit(g, h, P["gru_unit_0.w_0"], P["gru_unit_0.b_0"], 2, 1, False)
        p = paddle.nn.functional.softmax(paddle.matmul(h, P["fc_9.w_0"]) + P["fc_9.b_0"], axis=-1)
        attn.append(a.numpy()[:, 0])
        hidden.append(h.numpy())
        probs.append(paddle.log(p).numpy())

    enc_n, pool_n, proj_n = enc.numpy(), pool.numpy()[:, 0], proj.numpy()
    out = []
    for i, w in enumerate(words):
        s, e, n = lod[0][i], lod[0][i + 1], len(w)
        out.append(
            dict(
                enc=enc_n[s:e],
                pool_weights=pool_n[s:e],
                vec=vec.numpy()[i],
                proj=proj_n[s:e],
                h0=h0.numpy()[i],
                hidden=np.stack([hidden[k][i] for k in range(n)]),
                attn=np.stack([attn[k][s:e] for k in range(n)]),
                log_probs=np.stack([probs[k][i] for k in range(n)]),
            )
        )
    return out


# ----------------------------------------------------------------------------- comparisons


def max_diffs(a: list[dict], b: list[dict]) -> dict[str, float]:
    return {
        k: max(
            float(np.abs(np.asarray(x[k], np.float64) - np.asarray(y[k], np.float64)).max())
            for x, y in zip(a, b, strict=True)
        )
        for k in OUTPUTS
    }


def _fmt(d: dict) -> str:
    return "  ".join(f"{k}={v:.2e}" for k, v in d.items())


MISTAKES = {
    "(a) column-sliced GRU weight, encoder fwd gru_0": dict(gru_columns={"gru_0.w_0"}),
    "(a) column-sliced GRU weight, encoder bwd gru_1": dict(gru_columns={"gru_1.w_0"}),
    "(a) column-sliced GRU weight, decoder gru_unit_0": dict(gru_columns={"gru_unit_0.w_0"}),
    "(b) reset after the product, gru_0": dict(reset_after={"gru_0.w_0"}),
    "(b) reset after the product, gru_1": dict(reset_after={"gru_1.w_0"}),
    "(b) reset after the product, gru_unit_0": dict(reset_after={"gru_unit_0.w_0"}),
    "(c) tanh in the decoder attention": dict(attn_tanh=True),
    "(d) fc_6 used as W.T (square; no effect: W6 only shifts all scores)": dict(transpose={"fc_6.w_0"}),
    "(d) fc_4 buffer read as [out,in] (reshape(out,in).T)": dict(transpose={"fc_4.w_0"}),
    "(d) fc_5 buffer read as [out,in]": dict(transpose={"fc_5.w_0"}),
    "(d) fc_8.w_1 buffer read as [out,in]": dict(transpose={"fc_8.w_1"}),
}


def build_case(name: str):
    sizes, pseed, bseed, lengths, n_words, rows = CASES[name]
    params = G.make_params(sizes, pseed)
    feats, words = G.make_batch(sizes, bseed, lengths, n_words)
    return sizes, params, feats, words, rows


def fixture_arrays(name: str, sizes, words, pd: list[dict], rows) -> dict:
    _, pseed, bseed, lengths, n_words, _ = CASES[name]
    cat = {
        k: np.concatenate([np.asarray(s[k]) for s in pd])
        for k in ("enc", "pool_weights", "proj", "hidden", "log_probs")
    }
    lp = cat["log_probs"]
    targets = np.concatenate([np.append(w[1:], 1) for w in words])
    if rows is None:
        rows = list(range(len(lp)))
    f32 = np.float32
    return dict(
        sizes_json=np.array(json.dumps(sizes, sort_keys=True)),
        param_seed=np.int64(pseed),
        batch_seed=np.int64(bseed),
        lengths=np.array(lengths, np.int64),
        n_words=np.array(n_words, np.int64),
        words=np.concatenate(words).astype(np.int64),
        enc=cat["enc"].astype(f32),
        pool_weights=cat["pool_weights"].astype(f32),
        vec=np.stack([s["vec"] for s in pd]).astype(f32),
        proj=cat["proj"].astype(f32),
        h0=np.stack([s["h0"] for s in pd]).astype(f32),
        hidden=cat["hidden"].astype(f32),
        attn=np.concatenate([s["attn"].reshape(-1) for s in pd]).astype(f32),
        log_prob_rows=np.array(rows, np.int64),
        log_probs=lp[rows].astype(f32),
        argmax=lp.argmax(1).astype(np.int64),
        max_log_prob=lp.max(1).astype(f32),
        target_log_prob=lp[np.arange(len(lp)), targets].astype(f32),
    )


def run_case(name: str, write: bool) -> bool:
    t0 = time.perf_counter()
    sizes, params, feats, words, rows = build_case(name)
    pd = paddle_forward(params, feats, words)
    t1 = time.perf_counter()
    ref = G.reference_numpy(params, feats, words)
    t2 = time.perf_counter()
    diffs = max_diffs(pd, ref)
    ok = all(v <= TOL for v in diffs.values())
    print(f"[{name}] sizes={sizes} lengths={CASES[name][3]} n_words={CASES[name][4]}")
    print(f"[{name}] paddle {t1 - t0:.2f}s, numpy reference {t2 - t1:.2f}s")
    print(f"[{name}] paddle vs numpy max|diff|: {_fmt(diffs)}  -> {'OK' if ok else 'FAIL'} (tol {TOL:g})")
    lp = np.concatenate([s["log_probs"] for s in pd])
    top2 = np.sort(lp, 1)[:, -2:]
    print(
        f"[{name}] smallest top-1/top-2 log-prob gap {float((top2[:, 1] - top2[:, 0]).min()):.3g}; "
        f"max pool weight {max(float(s['pool_weights'].max()) for s in pd):.3f}"
    )
    mistakes = dict(MISTAKES)
    mistakes["(e) reverse GRU from the padded batch end, not the segment's end"] = dict(
        reverse_pad_to=max(CASES[name][3])
    )
    for label, opts in mistakes.items():
        dev = max_diffs(pd, G.reference_numpy(params, feats, words, **opts))
        print(f"[{name}] mistake {label}: max dev {max(dev.values()):.3g}  ({_fmt(dev)})")
    if write and ok:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        path = FIXTURES / f"paddle_ets_{name}.npz"
        np.savez_compressed(path, **fixture_arrays(name, sizes, words, pd, rows))
        print(f"[{name}] wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.3f} MB)")
    return ok


def square_fc4_check():
    """fc_4 is [2hid, dec]: square when dec == 2hid, where the transposed-weight mistake is W.T."""
    sizes = dict(G.SMALL, dec=2 * G.SMALL["hid"])
    params = G.make_params(sizes, 5)
    feats, words = G.make_batch(sizes, 6, [5, 3], [4, 4])
    pd = paddle_forward(params, feats, words)
    ok = max(max_diffs(pd, G.reference_numpy(params, feats, words)).values())
    dev = max_diffs(pd, G.reference_numpy(params, feats, words, transpose={"fc_4.w_0"}))
    print(
        f"[square dec=2hid] paddle vs numpy {ok:.2e}; mistake (d) fc_4 used as W.T: "
        f"max dev {max(dev.values()):.3g}  ({_fmt(dev)})"
    )


SAVE_PARAMS_CASE = ("small", ("fc_0.b_0", "gru_0.b_0", "fc_4.w_0"))


def parse_dense_tensor_file(data: bytes) -> tuple[np.ndarray, list]:
    """Decode one save_params file by the layout in the module docstring (pure Python + numpy)."""
    import struct

    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    (version,) = take("<I")
    assert version == 0, version
    (levels,) = take("<Q")
    lod = []
    for _ in range(levels):
        (nbytes,) = take("<Q")
        lod.append(list(take(f"<{nbytes // 8}Q")))
    (tversion,) = take("<I")
    assert tversion == 0, tversion
    (desc_size,) = take("<i")
    desc, pos = data[pos : pos + desc_size], pos + desc_size

    def varint(buf, i):
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, i

    i, dtype, dims = 0, None, []
    while i < len(desc):
        tag, i = varint(desc, i)
        value, i = varint(desc, i)
        if tag == 0x08:
            dtype = value
        elif tag == 0x10:
            dims.append(value)
        else:
            raise ValueError(f"unexpected TensorDesc tag {tag:#x}")
    np_dtype = {5: np.float32, 6: np.float64, 3: np.int64, 2: np.int32}[dtype]
    arr = np.frombuffer(data, np_dtype, count=int(np.prod(dims)), offset=pos).reshape(dims)
    assert pos + arr.nbytes == len(data), "trailing bytes"
    return arr, lod


def write_save_params(out_dir: Path) -> None:
    import paddle

    case, names = SAVE_PARAMS_CASE
    params = G.make_params(CASES[case][0], CASES[case][1])
    paddle.enable_static()
    try:
        main_prog, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main_prog, startup):
            vars_ = [paddle.create_parameter(shape=list(params[n].shape), dtype="float32", name=n) for n in names]
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        scope = paddle.static.global_scope()
        for n in names:
            scope.find_var(n).get_tensor().set(params[n], paddle.CPUPlace())
        out_dir.mkdir(parents=True, exist_ok=True)
        paddle.static.save_vars(exe, str(out_dir), main_program=main_prog, vars=vars_)
    finally:
        paddle.disable_static()
    for n in names:
        data = (out_dir / n).read_bytes()
        arr, lod = parse_dense_tensor_file(data)
        assert lod == [] and np.array_equal(arr, params[n]), n
        print(
            f"[save_params] {out_dir.relative_to(ROOT)}/{n}: {len(data)} bytes, "
            f"header+desc {data[: len(data) - arr.nbytes].hex(' ')}; parsed == make_params({case})"
        )


def write_pdparams(path: Path) -> None:
    import pickle
    import pickletools

    import paddle

    case, names = SAVE_PARAMS_CASE
    params = G.make_params(CASES[case][0], CASES[case][1])
    paddle.save({n: params[n] for n in names}, str(path))
    raw = path.read_bytes()
    proto = next(pickletools.genops(raw))[1]
    back = pickle.loads(raw)
    assert list(back) == list(names) and all(np.array_equal(back[n], params[n]) for n in names)
    print(f"[pdparams] {path.relative_to(ROOT)}: {len(raw)} bytes, pickle protocol {proto}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only, write no fixtures")
    ap.add_argument("--cases", default="small,full")
    args = ap.parse_args(argv)
    import paddle

    paddle.set_device("cpu")
    print(f"paddle {paddle.__version__}, numpy {np.__version__}")
    t0 = time.perf_counter()
    ok = all([run_case(c, not args.check) for c in args.cases.split(",")])
    square_fc4_check()
    if not args.check:
        write_save_params(FIXTURES / "paddle_save_params_small")
        write_pdparams(FIXTURES / "paddle_params_small.pdparams")
    print(f"total {time.perf_counter() - t0:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
