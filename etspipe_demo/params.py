"""The parameters of a generated demo data set (one frozen record, checked once).

They are the whole recipe: equal parameters give byte-equal files, and the
cache (`etspipe_demo.cache`) reuses a set only when its recorded parameters
equal the requested ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from etspipe.errors import UserError


@dataclasses.dataclass(frozen=True)
class DemoParams:
    """Everything that decides the generated data; equal params (and seed) give equal files."""

    n_videos: int = 150
    seed: int = 0
    fps: int = 15
    height: int = 128
    width: int = 172
    n_events: int = 3
    pairs_per_video: int = 2
    event_seconds: tuple[float, float] = (1.3, 1.9)
    gap_seconds: tuple[float, float] = (0.15, 0.4)
    edge_seconds: tuple[float, float] = (0.2, 0.5)
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    background: str = "mixed"  # plain | noisy | mixed (each video plain or noisy at random)
    crf: int = 18

    def check(self) -> None:
        """Reject parameters that cannot give a usable data set, with one clear line."""
        if self.n_videos < 6:
            raise UserError(f"demo data: n_videos must be at least 6 (one twin pair per split), got {self.n_videos}")
        if self.n_events < 2:
            raise UserError(f"demo data: n_events must be at least 2 (pairs need two events), got {self.n_events}")
        if not 1 <= self.pairs_per_video <= self.n_events - 1:
            raise UserError(
                f"demo data: pairs_per_video must be in 1..{self.n_events - 1} for {self.n_events} events,"
                f" got {self.pairs_per_video}")
        if self.background not in ("plain", "noisy", "mixed"):
            raise UserError(f"demo data: background must be plain, noisy or mixed, got {self.background!r}")
        if self.height < 128 or self.width < 172 or self.height % 2 or self.width % 2:
            raise UserError(f"demo data: frame size must be even and at least 128x172, got {self.height}x{self.width}")
        if self.fps < 5:
            raise UserError(f"demo data: fps must be at least 5, got {self.fps}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) <= 0:
            raise UserError(f"demo data: split_fractions must be three positive numbers, got {self.split_fractions}")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def make_params(n_videos: int, seed: int, overrides: dict[str, Any]) -> DemoParams:
    """Checked parameters from the generator's arguments; an unknown name is a user error."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DemoParams)}
    if unknown:
        raise UserError(f"demo data: unknown parameter(s) {', '.join(sorted(unknown))}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    params = DemoParams(n_videos=int(n_videos), seed=int(seed), **overrides)
    params.check()
    return params
