"""Import PaddlePaddle's released ETS model (`ETS.pdparams` + `dict.txt`) as an etspipe run folder.

The seed's weights run nowhere on a current stack (Paddle 3 has no `fluid`); here they are read
without Paddle, checked name by name and shape by shape against caption_model.paddle_ets (the
network's sizes are read off the file, so a re-trained variant of other sizes imports too), and
written as an ordinary run: ``best.pt`` (an etspipe checkpoint of ``model.arch: paddle_ets``),
``config.yaml`` (configs/paddle_ets.yaml with the file's sizes), ``vocab.txt`` and ``import.json``
(where it came from, checksums). ``--weights RUN_DIR`` then takes it everywhere (evaluate, predict,
``train --init-from``).

Two parameter layouts are read:

* a ``.pdparams`` file: a pickle of ``{name: ndarray}`` (fluid 1.x ``fluid.save`` under Python 2 or 3,
  or ``paddle.save`` of a state dict). It is unpickled with only numpy's array constructors allowed,
  so a file cannot run code;
* fluid's ``save_params`` folder: one file per parameter, named by it, in Paddle's tensor format
  (caption_model.formats.paddle_tensor).

Word ids are dict.txt's line numbers (``<s>`` 0, ``<e>`` 1, ``<unk>`` 2); etspipe's vocabulary puts
``<pad>`` before them, and caption_model.paddle_ets maps one onto the other (Paddle id = id - 1).
Without dict.txt the seed's own rule rebuilds it from ActivityNet's ``train.json``
(caption_model.formats.seed_vocab), and its size must equal the weights' vocabulary rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from caption_model.paddle_ets import PADDLE_NAMES, PaddleETS, PaddleETSConfig
from etspipe.errors import UserError

logger = logging.getLogger(__name__)

PADDLE_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "paddle_ets.yaml"
_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                  ("numpy._core.numeric", "_frombuffer"), ("collections", "OrderedDict"), ("_codecs", "encode")}
_SKIPPED_KEYS = ("StructuredToParameterName@@",)  # paddle.save's map of structured names, not a parameter


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts and strings, and refuses every other global."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's protocol
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a parameter file holds arrays only")
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def read_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: float32 array}`` of a fluid/paddle ``.pdparams`` pickle; a damaged file is one line naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except (EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, EOFError) or "truncated" in str(exc):
            raise UserError(f"{path}: the file ends early ({len(raw)} bytes): truncated download?") from None
        raise UserError(f"{path}: not a Paddle parameter file ({_one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - pickle raises many types on foreign or damaged bytes
        raise UserError(f"{path}: not a Paddle parameter file ({type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a Paddle parameter file (a pickle of {type(data).__name__}, not of a dict)")
    out = {}
    for key, value in data.items():
        name = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if name in _SKIPPED_KEYS:
            continue
        if not isinstance(value, np.ndarray):
            raise UserError(f"{path}: parameter {name} is a {type(value).__name__}, not an array")
        out[name] = value
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def read_params(path: str | Path) -> dict[str, np.ndarray]:
    """Parameters of a ``.pdparams`` file or of fluid's ``save_params`` folder."""
    path = Path(path)
    if path.is_dir():
        from caption_model.formats.paddle_tensor import read_tensor_folder

        return read_tensor_folder(path)
    if not path.exists():
        raise UserError(f"parameter file not found: {path}")
    return read_pdparams(path)


def network_sizes(params: dict[str, np.ndarray], where: str) -> tuple[PaddleETSConfig, int, int]:
    """(sizes, feature dim, Paddle's vocabulary size) read off the parameters that define them."""
    needed = {"fc_0.w_0": 2, "gru_0.w_0": 2, "gru_unit_0.w_0": 2, "embedding_0.w_0": 2}
    missing = [n for n in needed if n not in params]
    if missing:
        raise UserError(f"{where}: no parameter {', '.join(missing)} (is this PaddlePaddle's ETS model?)")
    bad = [f"{n} has {params[n].ndim} dimensions" for n, d in needed.items() if params[n].ndim != d]
    if bad:
        raise UserError(f"{where}: {'; '.join(bad)}, expected 2")
    feat, proj = params["fc_0.w_0"].shape
    emb_rows, embed = params["embedding_0.w_0"].shape
    cfg = PaddleETSConfig(proj_dim=int(proj), gru_dim=int(params["gru_0.w_0"].shape[0]),
                          hidden_dim=int(params["gru_unit_0.w_0"].shape[0]), embed_dim=int(embed))
    return cfg, int(feat), int(emb_rows)


def check_params(params: dict[str, np.ndarray], where: str) -> tuple[PaddleETSConfig, int, int]:
    """Every name and shape against the network the file's sizes define; all problems in one line."""
    cfg, feat, vocab_rows = network_sizes(params, where)
    wanted = PaddleETS.shapes(cfg, feat, vocab_rows + 1)
    problems = []
    for name, attr in PADDLE_NAMES.items():
        if name not in params:
            problems.append(f"missing {name} (expected shape {list(wanted[attr])})")
        elif tuple(params[name].shape) != wanted[attr]:
            problems.append(f"{name} has shape {list(params[name].shape)}, expected {list(wanted[attr])}")
    extra = sorted(set(params) - set(PADDLE_NAMES))
    if extra:
        problems.append(f"unexpected parameter{'s' if len(extra) > 1 else ''} {', '.join(extra[:5])}"
                        + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""))
    bad = [n for n in PADDLE_NAMES if n in params and not np.isfinite(params[n]).all()]
    if bad:
        problems.append(f"non-finite values in {', '.join(bad)}")
    if problems:
        raise UserError(f"{where}: {'; '.join(problems)}")
    return cfg, feat, vocab_rows


def check_dictionary(words: list[str], vocab_rows: int, where: str) -> None:
    """The dictionary must give every embedding row a word, with the seed's three specials first."""
    if words[:3] != ["<s>", "<e>", "<unk>"]:
        raise UserError(f"{where}: the first three words must be <s> <e> <unk>, got {' '.join(words[:3])!r}")
    if len(words) != vocab_rows:
        raise UserError(f"{where}: {len(words)} words, but the weights have {vocab_rows} vocabulary rows "
                        "(embedding_0.w_0): not the dictionary these weights were trained with")
    seen: set[str] = set()
    dup = [w for w in words if w in seen or seen.add(w)]
    if dup or "<pad>" in words:
        raise UserError(f"{where}: word {(dup or ['<pad>'])[0]!r} appears twice (or is etspipe's <pad>)")


def load_dictionary(dict_path: str | Path | None, train_json: str | Path | None) -> tuple[list[str], str]:
    """(words by id, where they came from): dict.txt, or the seed's rule over ActivityNet's train.json."""
    from caption_model.formats import seed_vocab

    if dict_path and train_json:
        raise UserError("give --dict (the model's dict.txt) or --train-json (rebuild it by the seed's rule), not both")
    if dict_path:
        return seed_vocab.read_dict_txt(dict_path), str(dict_path)
    if train_json:
        entries = seed_vocab.seed_dictionary(train_json)
        return [w for w, _ in entries], f"rebuilt from {train_json} by the seed's rule"
    raise UserError("the word ids need the model's dictionary: give --dict dict.txt, or --train-json "
                    "ActivityNet's train.json to rebuild it by the seed's rule")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode() if path.is_dir() else b"")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def import_paddle_ets(params_path: str | Path, out_dir: str | Path, dict_path: str | Path | None = None,
                      train_json: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the run folder of the seed's model; returns its ``best.pt``."""
    from caption_model.formats.text import Vocab
    from caption_model.runs.checkpoint import BEST, FORMAT, VERSION, save_checkpoint
    from caption_model.runs.run_folder import CONFIG_FILE, claim_folder, plain
    from etspipe.config import load_config
    from features_store.recipes import resnet152_store_meta

    t0 = time.perf_counter()
    params_path, out = Path(params_path), Path(out_dir)
    params = read_params(params_path)
    cfg_net, feat_dim, vocab_rows = check_params(params, str(params_path))
    words, dict_source = load_dictionary(dict_path, train_json)
    check_dictionary(words, vocab_rows, str(dict_path or train_json))
    claim_folder(out, resumed=False, overwrite=overwrite)

    overrides = [f"model.{k}={v}" for k, v in vars(cfg_net).items()]
    cfg = load_config(PADDLE_CONFIG, overrides)
    cfg["train"]["save_dir"] = str(out)
    vocab = Vocab(["<pad>", *words])
    model = PaddleETS(cfg_net, feat_dim, len(vocab))
    state = {PADDLE_NAMES[name]: torch.from_numpy(np.ascontiguousarray(params[name], dtype=np.float32))
             for name in PADDLE_NAMES}
    model.load_state_dict(state)
    store_meta = resnet152_store_meta() if feat_dim == 2048 else {"dim": feat_dim}
    origin = {"params": str(params_path), "params_sha256": _sha256(params_path), "dictionary": dict_source,
              "vocabulary": len(words), "network": {**vars(cfg_net), "feat_dim": feat_dim}}
    ckpt = {"format": FORMAT, "version": VERSION, "model": model.state_dict(), "epoch": 0, "batch_in_epoch": 0,
            "step": 0, "vocab": vocab.to_dict(), "feat_dim": feat_dim, "config": plain(cfg),
            "store_meta": store_meta, "val_videos": [], "best": {"metric": None, "value": None, "epoch": None},
            "metrics": {}, "imported": origin}
    out.mkdir(parents=True, exist_ok=True)
    best = save_checkpoint(ckpt, out / BEST)
    import yaml

    (out / CONFIG_FILE).write_text("# PaddlePaddle's released ETS model, imported by `etspipe import-weights`\n"
                                   + yaml.safe_dump(plain(cfg), sort_keys=False), encoding="utf-8")
    vocab.save_txt(out / "vocab.txt")
    (out / "import.json").write_text(json.dumps(origin, indent=2) + "\n", encoding="utf-8")
    logger.info("imported %s (%d parameters, vocabulary %d) into %s in %.1f s", params_path, len(params),
                len(words), out, time.perf_counter() - t0)
    return best
