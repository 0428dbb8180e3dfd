"""`etspipe store verify`: check every complete video of a store someone else wrote.

A store is written over days by many processes on machines that may die; a
user needs to know that "complete" still means "complete and correct" without
having watched it. Verification reads every complete video in full and checks
it against its commit marker and the store's rules; repair turns each bad
video back into "not done" (so the next `extract` redoes it) and removes
leftovers no complete video uses, touching nothing that checked out good.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from etspipe.errors import UserError
from etspipe.progress import progress_bar
from features_store.alignment import row_times
from features_store.base import FeatureStore
from features_store.projection import projection_identity
from features_store.recipes import recipe_of

log = logging.getLogger(__name__)

UNREADABLE = "unreadable"  # the store's projection cannot be read: its videos' PCA is not judged


@dataclass
class VerifyReport:
    """What `verify_store` found (and, with repair, what it changed)."""

    videos_checked: int = 0
    videos_good: int = 0
    bad: dict[str, list[str]] = field(default_factory=dict)  # video id -> problems
    orphans: list[tuple[str, str]] = field(default_factory=list)  # (name in the store, why)
    store_problems: list[str] = field(default_factory=list)  # of the store as a whole (repair cannot fix)
    repaired: bool = False

    @property
    def clean(self) -> bool:
        return not self.bad and not self.orphans and not self.store_problems

    def lines(self) -> list[str]:
        """One line per problem, then the summary line."""
        out = [f"bad store: {problem}" for problem in self.store_problems]
        out += [f"bad video {vid}: {'; '.join(problems)}" for vid, problems in sorted(self.bad.items())]
        out += [f"orphan {name}: {why}" for name, why in self.orphans]
        summary = (f"{self.videos_checked} complete videos checked: {self.videos_good} good, {len(self.bad)} bad; "
                   f"{len(self.orphans)} orphaned files")
        if self.store_problems:
            summary += f"; {len(self.store_problems)} problem(s) of the store itself (--repair does not change those)"
        if self.repaired and not self.clean:
            summary += "; repaired: bad videos are not done any more (extract again redoes them), orphans removed"
        elif not self.clean:
            summary += "; run with --repair to mark the bad videos not done and remove the orphans"
        return [*out, summary]


def check_video(store: FeatureStore, video_id: str, pca_sha256: str | None = None) -> list[str]:
    """Problems of one complete video: marker against rows, decoding, values, row times, checksums,
    and the PCA it went through against `pca_sha256`, the projection the store holds (None: none;
    UNREADABLE: not judged). In a store whose recipe says its imported rows went through that
    projection (an official ActivityNet import, `features_store.recipes`), a video that records
    none is such an imported video."""
    try:
        vmeta = store.video_meta(video_id)
    except UserError:
        return ["its commit marker is empty or damaged"]
    problems = list(store._check_video(video_id))
    n_rows = vmeta.get("n_rows")
    try:
        rows = store.rows(video_id)
    except UserError as exc:
        return [*problems, str(exc).split(": ", 1)[-1]]
    if rows.shape != (n_rows, store.dim):
        problems.append(f"rows have shape {rows.shape}, the marker says ({n_rows}, {store.dim})")
    elif not np.isfinite(rows).all():
        problems.append("rows contain NaN or infinity")
    problems += _time_problems(store, vmeta)
    recorded = vmeta.get("pca_sha256")
    if recorded is None and pca_sha256 is not None and _imported_through(store) == pca_sha256:
        recorded = pca_sha256
    problems += _pca_problems(recorded, pca_sha256)
    return problems


def _imported_through(store: FeatureStore) -> str | None:
    """The checksum of the projection the store's recipe says its imported rows went through, if known."""
    projection = (recipe_of(store.meta) or {}).get("projection") or {}
    return projection.get("sha256")


def _pca_problems(recorded: str | None, stored: str | None) -> list[str]:
    """A video's rows must have gone through the store's own projection (none if it holds none)."""
    if recorded == stored or stored == UNREADABLE:  # a damaged projection is reported once, for the store
        return []
    if stored is None:
        return [f"projected by PCA {recorded[:12]}, but the store holds no projection"]
    if recorded is None:
        return [f"records no PCA projection, but the store's rows go through PCA {stored[:12]}"]
    return [f"projected by another PCA ({recorded[:12]}, the store's is {stored[:12]})"]


def _store_pca(store: FeatureStore, report: VerifyReport) -> str | None:
    """The checksum of the store's projection; a damaged or mismatched one is a store problem."""
    try:
        identity = projection_identity(store)
    except UserError as exc:
        report.store_problems.append(str(exc))
        return UNREADABLE
    if identity is not None and identity["dim"] != store.dim:
        report.store_problems.append(f"its PCA projection reduces to {identity['dim']} dimensions, its rows "
                                     f"have {store.dim}")
    return None if identity is None else identity["sha256"]


def _time_problems(store: FeatureStore, vmeta: dict) -> list[str]:
    rule = vmeta.get("time_rule") or {}
    try:
        times = row_times(rule, int(vmeta["n_rows"]))
    except (KeyError, TypeError, ValueError, UserError) as exc:
        return [f"row times cannot be computed ({exc})"]
    problems = []
    if rule.get("kind") == "clip":
        for key in ("clip_len", "stride"):
            if key in store.meta and key in rule and float(rule[key]) != float(store.meta[key]):
                problems.append(f"row {key} {rule[key]} differs from the store's {store.meta[key]}")
    if not np.isfinite(times).all() or (len(times) > 1 and not np.all(np.diff(times) > 0)):
        problems.append("row times are not finite and increasing")
    return problems


def verify_store(store: FeatureStore, repair: bool = False, progress: bool = False) -> VerifyReport:
    """Check every complete video and look for orphans; with `repair`, fix what was found."""
    report = VerifyReport()
    pca_sha256 = _store_pca(store, report)
    ids = store.complete_ids()
    for video_id in progress_bar(ids, desc="verify", unit="video", enabled=progress):
        report.videos_checked += 1
        problems = check_video(store, video_id, pca_sha256)
        if problems:
            report.bad[video_id] = problems
        else:
            report.videos_good += 1
    if repair:
        for video_id in report.bad:
            log.info("marking %s not done", video_id)
            store.delete_video(video_id)
    report.orphans = store._orphans()
    if repair:
        for name, _why in report.orphans:
            store._remove_orphan(name)
        report.repaired = True
    return report
