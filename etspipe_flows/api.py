"""etspipe from Python: caption videos, read features, score results.

``from etspipe import Captioner, open_store, score``.

The same code paths as the CLI, with no file written that the caller did not ask for: `Captioner`
loads a run as `etspipe predict` does (`caption_model.predict.load_predictor`), resolves videos as it
does (`resolve_entries`: a raw file is extracted into the working store by the
recipe of the features the model was trained on), proposes events with the run's proposal model
(`caption_model.proposals.dense.expand_untimed`) and captions through the one decoder
(`caption_model.captioning.caption_segments`). Mistakes raise the CLI's one-line `UserError`.

    >>> from etspipe import Captioner, score
    >>> captioner = Captioner.load(RUN)                       # a run folder or a checkpoint
    >>> first = captioner.caption(VIDEO)[0]                   # a raw file or a store id; whole video
    >>> first.segment[0], isinstance(first.sentence, str), first.attention.shape[1] == len(first.times)
    (0.0, True, True)
    >>> [c.segment for c in captioner.caption(VIDEO, segments=[(0.5, 2.0), (1.0, 3.0)])]
    [(0.5, 2.0), (1.0, 3.0)]
    >>> sorted(score(RESULTS, [REFERENCES]))[:3]              # ActivityNet result and annotation files (or dicts)
    ['Bleu_1', 'Bleu_2', 'Bleu_3']

(`RUN`, `VIDEO`, `RESULTS`, `REFERENCES` name a small trained run and its files; tests/test_api.py runs
these lines on one.)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from etspipe.errors import UserError

__all__ = ["Caption", "Captioner", "open_store", "score"]


@dataclass
class Caption:
    """One captioned segment: its video (store id), times, sentence and the attention behind each word.

    `attention` is one row per written word (and one more for the step that wrote ``<e>`` when the
    caption ended before ``decode.max_len``) over the segment's feature rows, whose times (s) are `times`.
    `proposal_score` is set for events from `Captioner.dense`.
    """

    video: str
    segment: tuple[float, float]
    sentence: str
    score: float
    words: list[str] = field(default_factory=list)
    attention: np.ndarray | None = None
    times: np.ndarray | None = None
    proposal_score: float | None = None


class Captioner:
    """A trained (or imported) run, ready to caption videos; build it with `Captioner.load`."""

    def __init__(self, predictor: Any, cfg: dict, extract: dict[str, str | None]):
        self._predictor, self._cfg, self._extract = predictor, cfg, extract

    @classmethod
    def load(cls, run_or_checkpoint: str | Path, device: str = "auto", *, store: str | Path | None = None,
             c3d_weights: str | None = None, resnet_weights: str | None = None, pca_file: str | None = None,
             mean_cube: str | None = None, config: str | Path | None = None) -> Captioner:
        """Load a run folder (its best checkpoint) or a checkpoint file.

        `store` is the feature store ids are read from and raw files are extracted into (default: the
        predict working store, ``<predict.results_dir>/features.zarr``); `c3d_weights`, `pca_file` and
        `mean_cube` are the files a raw video's extraction may need (as `etspipe predict`'s options);
        `config` a YAML file over configs/ets.yaml for the decoding and prediction settings. A run on ActivityNet's
        ResNet-152 frame rows (the seed's model) extracts raw videos with `resnet_weights` (torchvision's file).
        """
        from etspipe.config import load_config

        if c3d_weights and resnet_weights:
            raise UserError("give c3d_weights or resnet_weights (the network of the run's recipe), not both")
        if not Path(run_or_checkpoint).exists():
            raise UserError(f"checkpoint not found: {run_or_checkpoint}")
        return cls.from_config(load_config(config), run_or_checkpoint, store, device=device,
                               extract_weights=c3d_weights or resnet_weights, pca_file=pca_file, mean_cube=mean_cube)

    @classmethod
    def from_config(cls, cfg: dict, weights: str | Path | None, store: str | Path | None = None, *,
                    device: str = "auto", extract_weights: str | None = None, pca_file: str | None = None,
                    mean_cube: str | None = None, echo: Any = None) -> Captioner:
        """`load` with a resolved config (the CLI's, overrides included); `weights` None: the best run under
        ``train.save_dir``. `etspipe predict` builds its captioner here."""
        from caption_model.predict import load_predictor

        predictor = load_predictor(cfg, None if weights is None else str(weights), store, device=device, echo=echo)
        return cls(predictor, cfg, {"c3d_weights": extract_weights, "pca_file": pca_file, "mean_cube": mean_cube})

    @property
    def predictor(self) -> Any:
        """The loaded checkpoint, model and store (caption_model.predict.Predictor) the CLI writes files with."""
        return self._predictor

    def resolve(self, entries: Sequence[Any], base_dir: Path | None = None
                ) -> tuple[list[tuple[Any, str]], list[dict[str, Any]], dict[str, str]]:
        """Store ids of file-list entries (raw files extracted by the run's recipe): `resolve_entries`."""
        return resolve_entries(self._cfg, self._predictor, entries, base_dir=base_dir,
                               device=str(self._predictor.device), **self._extract)

    @property
    def checkpoint(self) -> Path:
        return Path(self._predictor.checkpoint)

    @property
    def store(self) -> str:
        """The feature store this captioner reads (and extracts raw files into)."""
        return self._predictor.store_path

    def caption(self, video: str | Path, segments: Sequence[tuple[float, float]] | None = None,
                beam_size: int = 3, store: str | Path | None = None) -> list[Caption]:
        """One caption per segment of `video` (a raw file or a store id); without `segments`, the whole video.

        Times are seconds; every segment is captioned, whatever its times (the one alignment rule of the
        project: past the stored end, zero-length or reversed segments take the nearest rows).
        """
        sid = self._store_id(video, store)
        if segments is None:
            with self._open() as fs:
                duration = fs.video_meta(sid).get("duration")
            if duration is None:
                raise UserError(f"the store does not know the duration of {sid}: give segments=[(start, end)]")
            segments = [(0.0, float(duration))]
        return self._caption([(sid, float(s), float(e), None) for s, e in segments], beam_size)

    def dense(self, video: str | Path, max_events: int | None = None, beam_size: int = 3,
              store: str | Path | None = None) -> list[Caption]:
        """Timed events of `video` from the run's proposal model, each captioned (as `predict` without times)."""
        from caption_model.formats.filelist import FileListEntry
        from caption_model.proposals.dense import expand_untimed

        sid = self._store_id(video, store)
        targets, scores, notes = expand_untimed(self._cfg, self.checkpoint, self.store,
                                                [(FileListEntry(1, sid, None, None), sid)], max_events=max_events,
                                                device=self._predictor.device)
        if any(e.start is None for e, _ in targets):
            raise UserError(" ".join(notes) or f"no events proposed for {sid}")
        return self._caption([(sid, e.start, e.end, scores.get((1, e.start, e.end))) for e, _ in targets], beam_size)

    # ---- the shared steps

    def _open(self):
        from features_store import open_store as _open_store

        return _open_store(self.store, "r")

    def _store_id(self, video: str | Path, store: str | Path | None) -> str:
        """The store id of `video`: an id of the store, or a raw file extracted into it by the run's recipe."""
        from caption_model.formats.filelist import FileListEntry
        from caption_model.predict import load_predictor

        if store is not None and str(store) != self.store:
            self._predictor = load_predictor(self._cfg, str(self.checkpoint), store, device=str(
                self._predictor.device), echo=None)
        known, failed, _ = self.resolve([FileListEntry(1, str(video), None, None)])
        if failed:
            raise UserError(failed[0]["error"].removeprefix("line 1: "))
        sid = known[0][1]
        self._predictor.store_ids = self._predictor.store_ids | {sid}
        return sid

    def _caption(self, targets: list[tuple[str, float, float, float | None]], beam_size: int) -> list[Caption]:
        from caption_model.captioning import caption_segments

        p = self._predictor
        run_cfg = {"decode": {**copy.deepcopy(self._cfg["decode"]), "beam_size": int(beam_size)},
                   "data": p.ckpt["config"]["data"]}
        with self._open() as fs:
            out = caption_segments(p.model, p.vocab, fs, [(sid, s, e) for sid, s, e, _ in targets], run_cfg, p.device,
                                   batch_size=int(self._cfg["decode"]["batch_size"]), progress=False,
                                   return_attn=True)
        captions = []
        for (sid, s, e, proposal), cap in zip(targets, out, strict=True):
            if cap is None:
                raise UserError(f"cannot read the features of {sid} in {self.store}")
            captions.append(Caption(sid, (s, e), cap["sentence"], float(cap["score"]), list(cap["words"]),
                                    cap.get("attn"), cap.get("times"), proposal))
        return captions


def resolve_entries(cfg: dict, predictor: Any, entries: Sequence[Any], *, base_dir: Path | None = None,
                    c3d_weights: str | None = None, device: str | None = None, pca_file: str | None = None,
                    mean_cube: str | None = None) -> tuple[list[tuple[Any, str]], list[dict[str, Any]], dict[str, str]]:
    """(entries with their store ids in line order, failed lines, store id -> source file) for file-list entries.

    An entry naming a store id keeps it; a raw video file is extracted into the predictor's store by the
    recipe of the features its model was trained on (`extract_features.extract_like_store`), the store
    made first if missing and removed again when nothing went into it. `Captioner.resolve` (which `etspipe predict`
    goes through) resolves videos here.
    """
    from caption_model.predict import create_cache_store, locate, remove_empty_store
    from extract_features import extract_like_store

    known, files, failed = locate(entries, predictor.store_ids, base_dir)
    sources: dict[str, str] = {}
    if files:
        created = create_cache_store(predictor)
        try:
            got = extract_like_store([p for _, p in files], predictor.store_path, cfg=cfg, weights=c3d_weights,
                                     device=device, pca_file=pca_file, mean_cube=mean_cube)
        finally:  # a refused, failed or interrupted extraction leaves no empty store behind
            if created is not None:
                remove_empty_store(predictor.store_path, created)
        for e, path in files:
            outcome = got[path]
            if outcome.ok:
                known.append((e, outcome.video_id))
                sources[outcome.video_id] = str(path)
            else:
                failed.append({"line": e.line, "error": f"line {e.line}: {outcome.error}"})
    known.sort(key=lambda k: k[0].line)
    return known, failed, sources


def open_store(path: str | Path, mode: str = "r"):
    """A feature store (Zarr folder, `.h5`/`.hdf5` file or fsspec URL): `rows(id)`, `get(id, start, end)`,
    `complete_ids()`, `video_meta(id)`, `info()`; docs/INTERFACES.md lists the whole reader."""
    from features_store import open_store as _open_store

    return _open_store(str(path), mode)


def score(results: str | Path | Mapping[str, Any], references: Sequence[str | Path | Mapping[str, Any]],
          tious: Sequence[float] = (0.3, 0.5, 0.7, 0.9), max_proposals: int = 1000) -> dict[str, float]:
    """The official ActivityNet Captions averages (`"METEOR"`, `"CIDEr"`, `"Bleu_4"`, `"ROUGE_L"`, ...), x100.

    `results` is a result file or its dict (``{"results": {video: [{"timestamp", "sentence"}]}}``, or
    the inner mapping); `references` annotation files or their dicts. METEOR runs Java, as `evaluate` does.
    """
    from caption_model.formats.results import read_result
    from caption_model.scoring.densevid import evaluate_results, load_references, validate_reference

    if isinstance(results, (str, Path)):
        results = read_result(results)
    results = results.get("results", results) if isinstance(results, Mapping) else results
    refs = [validate_reference(r, "references") if isinstance(r, Mapping) else load_references([r])[0]
            for r in references]
    scores = evaluate_results(results, references=refs, tious=tious, max_proposals=max_proposals)
    return {k: v for k, v in scores["average"].items() if v is not None}
