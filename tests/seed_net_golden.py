"""Inputs and a plain-numpy reference for the Paddle ETS golden fixtures (numpy only: no torch, no paddle).

The network is PaddleCV/video's ETS (``models/ets/ets_net.py``) as described in /work/shared/SEED.md.
``benchmarks/paddle_parity.py`` (run in a separate venv that has paddlepaddle) computes the same
outputs with Paddle's own kernels and stores them in ``tests/fixtures/paddle_ets_{small,full}.npz``;
a test regenerates the weights with :func:`make_params` and the inputs with :func:`make_batch`
from the seeds and lengths stored there.

Conventions
-----------
* Weights carry fluid's auto-names and ``[in, out]`` layout (``y = x @ W``), float32.
* ``make_params(sizes, seed)`` draws from ``np.random.default_rng(seed)`` in the fixed order of
  :data:`PARAM_ORDER`; ``make_batch(sizes, seed, ...)`` draws from ``np.random.default_rng([seed, 1])``
  (a different stream, so the same seed may be passed to both). All draws are float64 and cast to
  float32, so they do not depend on numpy's float32 sampling paths.
* ``words[i]`` is the teacher-forced decoder input of segment i: ``<s>`` (id 0) followed by word
  ids in ``[3, V)``; ``log_probs[i][k]`` is the distribution after reading ``words[i][k]``.
* Nothing in the network needs ``fc == 2 * hid``: fc only feeds fc_1/fc_2; everything downstream of
  the encoder has ``2 * hid`` inputs.
"""

from __future__ import annotations

import numpy as np

SMALL = dict(feat=16, fc=12, hid=6, dec=8, emb=10, vocab=23)
FULL = dict(feat=2048, fc=1024, hid=512, dec=512, emb=512, vocab=5200)

# name -> (shape as a function of the sizes, fan_in for the scale, gain); creation order of fluid.
PARAM_ORDER = (
    "fc_0.w_0",
    "fc_0.b_0",
    "fc_1.w_0",
    "gru_0.w_0",
    "gru_0.b_0",
    "fc_2.w_0",
    "gru_1.w_0",
    "gru_1.b_0",
    "fc_3.w_0",
    "fc_4.w_0",
    "fc_5.w_0",
    "embedding_0.w_0",
    "fc_6.w_0",
    "fc_7.w_0",
    "fc_8.w_0",
    "fc_8.w_1",
    "gru_unit_0.w_0",
    "gru_unit_0.b_0",
    "fc_9.w_0",
    "fc_9.b_0",
)


def param_shapes(sizes: dict) -> dict[str, tuple[int, ...]]:
    """fluid name -> shape for the given sizes (SEED.md's table)."""
    f, c, h, d, e, v = (sizes[k] for k in ("feat", "fc", "hid", "dec", "emb", "vocab"))
    return {
        "fc_0.w_0": (f, c),
        "fc_0.b_0": (c,),
        "fc_1.w_0": (c, 3 * h),
        "gru_0.w_0": (h, 3 * h),
        "gru_0.b_0": (1, 3 * h),
        "fc_2.w_0": (c, 3 * h),
        "gru_1.w_0": (h, 3 * h),
        "gru_1.b_0": (1, 3 * h),
        "fc_3.w_0": (2 * h, 1),
        "fc_4.w_0": (2 * h, d),
        "fc_5.w_0": (2 * h, d),
        "embedding_0.w_0": (v, e),
        "fc_6.w_0": (d, d),
        "fc_7.w_0": (d, 1),
        "fc_8.w_0": (e, 3 * d),
        "fc_8.w_1": (2 * h, 3 * d),
        "gru_unit_0.w_0": (d, 3 * d),
        "gru_unit_0.b_0": (1, 3 * d),
        "fc_9.w_0": (d, v),
        "fc_9.b_0": (v,),
    }


# uniform(-a, a) half-widths: a = gain / sqrt(fan_in) for weights, a fixed width for biases.
# fc_3 and fc_7 are large so that the pooling and attention softmaxes are far from uniform.
_GAIN = {"fc_3.w_0": 10.0, "fc_7.w_0": 12.0, "fc_9.w_0": 6.0}
_BIAS = {"fc_0.b_0": 0.5, "gru_0.b_0": 0.5, "gru_1.b_0": 0.5, "gru_unit_0.b_0": 0.5, "fc_9.b_0": 1.0}


def make_params(sizes: dict, seed: int) -> dict[str, np.ndarray]:
    """float32 weights with fluid's names and shapes, drawn from ``default_rng(seed)`` in PARAM_ORDER."""
    rng = np.random.default_rng(seed)
    shapes = param_shapes(sizes)
    out = {}
    for name in PARAM_ORDER:
        shape = shapes[name]
        if name in _BIAS:
            a = _BIAS[name]
        elif name == "embedding_0.w_0":
            a = 1.0
        else:
            a = _GAIN.get(name, 1.5) / np.sqrt(shape[0])
        out[name] = rng.uniform(-a, a, size=shape).astype(np.float64).astype(np.float32)
    return out


def make_batch(sizes: dict, seed: int, lengths: list[int], n_words: list[int]):
    """Segments of the given row counts and captions of ``n_words`` tokens (``<s>`` included).

    Returns ``(feats, words)``: float32 ``(T_i, feat)`` arrays and int64 arrays ``[0, w_1, ...]``
    with ``w_k`` in ``[3, vocab)``. Drawn from ``default_rng([seed, 1])``.
    """
    if len(lengths) != len(n_words):
        raise ValueError("one caption per segment")
    rng = np.random.default_rng([seed, 1])
    feats, words = [], []
    for t, n in zip(lengths, n_words, strict=True):
        if t < 1 or n < 1:
            raise ValueError("empty segment or caption")
        feats.append(rng.standard_normal((t, sizes["feat"])).astype(np.float32))
        w = rng.integers(3, sizes["vocab"], size=n - 1).astype(np.int64)
        words.append(np.concatenate([np.zeros(1, np.int64), w]))
    return feats, words


# ----------------------------------------------------------------------------- numpy reference


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x, axis=-1):
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis=-1):
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def split_gru_weight(w: np.ndarray, layout: str = "paddle"):
    """Paddle's ``[D, 3D]`` GRU weight as ``(W_ur [D, 2D], W_c [D, D])``.

    ``layout="paddle"``: the buffer is a row-major ``[D, 2D]`` block followed by a row-major
    ``[D, D]`` block (what the ``gru``/``gru_unit`` kernels read). ``layout="columns"`` is the
    wrong reading ``w[:, :2D], w[:, 2D:]`` (kept for the mistake checks).
    """
    d = w.shape[0]
    if layout == "columns":
        return w[:, : 2 * d], w[:, 2 * d :]
    flat = np.ascontiguousarray(w).reshape(-1)
    return flat[: 2 * d * d].reshape(d, 2 * d), flat[2 * d * d :].reshape(d, d)


def gru_step(g, h, w_ur, w_c, b, *, reset_after=False):
    """One Paddle GRU step (origin_mode False). g: (..., 3D) input projection, b: (3D,) bias."""
    d = h.shape[-1]
    g = g + b
    ur = _sigmoid(g[..., : 2 * d] + h @ w_ur)
    u, r = ur[..., :d], ur[..., d:]
    if reset_after:  # mistake (b): torch.nn.GRU's placement of the reset gate
        c = np.tanh(g[..., 2 * d :] + r * (h @ w_c))
    else:
        c = np.tanh(g[..., 2 * d :] + (r * h) @ w_c)
    return (1.0 - u) * h + u * c


def _gru_sequence(gx, w, b, *, reverse, layout, reset_after):
    w_ur, w_c = split_gru_weight(w, layout)
    t_len, d = gx.shape[0], w.shape[0]
    h = np.zeros(d)
    out = np.zeros((t_len, d))
    steps = range(t_len - 1, -1, -1) if reverse else range(t_len)
    for t in steps:
        h = gru_step(gx[t], h, w_ur, w_c, b.reshape(-1), reset_after=reset_after)
        out[t] = h
    return out


def reference_numpy(params: dict, feats, words, **mistakes) -> list[dict]:
    """float64 numpy forward of ETS (teacher forcing), one dict per segment.

    Keys: ``enc (T, 2hid)``, ``pool_weights (T,)``, ``vec (2hid,)``, ``proj (T, dec)``,
    ``h0 (dec,)``, ``hidden (L, dec)`` (decoder state after each word), ``attn (L, T)``,
    ``log_probs (L, V)``.

    ``mistakes`` (for demonstrating that the fixtures catch them; all off by default):
    ``gru_columns`` (set of GRU param names read with the column-sliced layout),
    ``reset_after`` (set of GRU param names applying reset after the product),
    ``attn_tanh`` (bool: tanh on the attention's mixed state),
    ``transpose`` (set of fc weight names used as ``W.reshape(out, in).T`` -- the layout mistake
    that keeps the shape; for square weights it is ``W.T``),
    ``reverse_pad_to`` (int: the reverse GRU runs over the segment padded with zero feature rows to
    this length, starting at the padded end instead of the segment's own end).
    """
    cols = set(mistakes.pop("gru_columns", ()))
    rst = set(mistakes.pop("reset_after", ()))
    attn_tanh = bool(mistakes.pop("attn_tanh", False))
    transpose = set(mistakes.pop("transpose", ()))
    pad_to = int(mistakes.pop("reverse_pad_to", 0))
    if mistakes:
        raise TypeError(f"unknown options {sorted(mistakes)}")

    p = {}
    for k, v in params.items():
        v = np.asarray(v, np.float64)
        if k in transpose:
            v = v.reshape(v.shape[::-1]).T
        p[k] = v

    def gru_opts(name):
        return dict(layout="columns" if name in cols else "paddle", reset_after=name in rst)

    w_ur, w_c = split_gru_weight(p["gru_unit_0.w_0"], gru_opts("gru_unit_0.w_0")["layout"])
    b_dec = p["gru_unit_0.b_0"].reshape(-1)
    results = []
    for feat, word in zip(feats, words, strict=True):
        x = np.tanh(np.asarray(feat, np.float64) @ p["fc_0.w_0"] + p["fc_0.b_0"])
        fwd = _gru_sequence(x @ p["fc_1.w_0"], p["gru_0.w_0"], p["gru_0.b_0"], reverse=False, **gru_opts("gru_0.w_0"))
        xb = x
        if pad_to > len(x):  # mistake: padded rows are tanh(0 W0 + b0)
            xb = np.concatenate([x, np.tile(np.tanh(p["fc_0.b_0"]), (pad_to - len(x), 1))])
        bwd = _gru_sequence(xb @ p["fc_2.w_0"], p["gru_1.w_0"], p["gru_1.b_0"], reverse=True, **gru_opts("gru_1.w_0"))[
            : len(x)
        ]
        enc = np.concatenate([fwd, bwd], axis=1)
        pool = _softmax((enc @ p["fc_3.w_0"])[:, 0])
        vec = pool @ enc
        proj = enc @ p["fc_4.w_0"]
        h = np.tanh(vec @ p["fc_5.w_0"])
        h0 = h
        attns, hiddens, logps = [], [], []
        for y in np.asarray(word):
            mixed = proj + h @ p["fc_6.w_0"]
            if attn_tanh:
                mixed = np.tanh(mixed)
            a = _softmax((mixed @ p["fc_7.w_0"])[:, 0])
            ctx = a @ enc
            g = p["embedding_0.w_0"][int(y)] @ p["fc_8.w_0"] + ctx @ p["fc_8.w_1"]
            h = gru_step(g, h, w_ur, w_c, b_dec, reset_after="gru_unit_0.w_0" in rst)
            attns.append(a)
            hiddens.append(h)
            logps.append(_log_softmax(h @ p["fc_9.w_0"] + p["fc_9.b_0"]))
        results.append(
            dict(
                enc=enc,
                pool_weights=pool,
                vec=vec,
                proj=proj,
                h0=h0,
                hidden=np.stack(hiddens),
                attn=np.stack(attns),
                log_probs=np.stack(logps),
            )
        )
    return results
