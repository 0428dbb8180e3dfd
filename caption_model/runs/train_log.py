"""What a training run reports: metrics.csv (+ TensorBoard), the log-interval averages, validation METEOR."""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from pathlib import Path

import torch

from etspipe.errors import UserError

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("time", "kind", "epoch", "step", "loss", "lr", "tokens_per_s", "segments_per_s",
               "val_loss", "val_meteor")


class MetricsLog:
    """metrics.csv always (appended to on resume), TensorBoard events when the package is installed."""

    def __init__(self, save_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = save_dir / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        new = not self.path.exists()
        self.fh = self.path.open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.fh, fieldnames=CSV_COLUMNS)
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional extra `etspipe[tensorboard]`
            pass
        else:
            self.tb = SummaryWriter(str(save_dir / "tensorboard"))

    def write(self, kind: str, epoch: int, step: int, **values: float) -> None:
        if not self.enabled:
            return
        row = {"time": f"{time.time():.3f}", "kind": kind, "epoch": epoch, "step": step}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        self.writer.writerow(row)
        self.fh.flush()
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()


class IntervalStats:
    """Sums over the steps since the last log line.

    The loss is summed as a tensor and read once per interval: reading it every
    step would wait for the device (a CUDA sync per step) for a number nobody sees.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0, self.tokens, self.segments, self.steps = time.perf_counter(), 0, 0, 0
        self.loss_sum: torch.Tensor | float = 0.0

    def add(self, nll: torch.Tensor, tokens: int, segments: int) -> None:
        self.loss_sum = self.loss_sum + nll.detach().float()
        self.tokens += tokens
        self.segments += segments
        self.steps += 1

    def summary(self, step: int, lr: float) -> dict:
        """The interval's averages; a non-finite loss stops the run (it would never recover)."""
        loss = float(self.loss_sum) / max(self.steps, 1)
        if not math.isfinite(loss):
            raise NonFiniteLoss.at(f"the captioner's loss is {loss} in the {self.steps} steps up to step {step}",
                                   "train.noam_factor")
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return {"loss": loss, "lr": lr, "tokens_per_s": self.tokens / dt, "segments_per_s": self.segments / dt}


class NonFiniteLoss(UserError):
    """A loss that became NaN or infinite: the run cannot recover, and the user can act on it."""

    @classmethod
    def at(cls, what: str, lr_key: str) -> NonFiniteLoss:
        return cls(f"training stopped: {what}; try a lower learning rate (-o {lr_key}=...) and check the "
                   f"features with `etspipe store verify STORE` (non-finite or huge rows give this); "
                   "checkpoints saved before this step are kept")


class MeteorScorer:
    """One Java METEOR 1.5 process (pycocoevalcap) for all validations of a run; None without Java."""

    def __init__(self, enabled: bool = True) -> None:
        self._meteor = None
        self.available = enabled and shutil.which("java") is not None
        if enabled and not self.available:
            logger.warning("java not found: validation reports loss only (no METEOR); best.pt follows the loss")

    def score(self, references: dict[int, list[str]], hypotheses: dict[int, str]) -> float | None:
        """Corpus METEOR in percent (as papers report it), or None when Java is missing."""
        if not self.available or not references:
            return None
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        res = {k: [hypotheses[k] or "<empty>"] for k in references}
        score, _ = self._meteor.compute_score(references, res)
        return 100.0 * float(score)

    def close(self) -> None:
        if self._meteor is not None:
            del self._meteor
            self._meteor = None
