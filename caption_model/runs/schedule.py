"""The Noam learning-rate schedule (Vaswani et al. 2017), the reference recipe of the ETS training.

    lr(step) = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5),  step = 1, 2, ...

It rises linearly for `warmup` steps, peaks at ``factor * (d_model * warmup)^-0.5``
and then decays as ``step^-0.5``. The schedule is a tiny class rather than a
``LambdaLR`` so that its whole state (one integer) is obvious in the checkpoint.
"""

from __future__ import annotations

import torch


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """Learning rate of optimiser step `step` (1-based; step 0 is treated as step 1)."""
    step = max(int(step), 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


class NoamSchedule:
    """Sets the learning rate of every parameter group before each optimiser step."""

    def __init__(self, optimizer: torch.optim.Optimizer, d_model: int, warmup: int,
                 factor: float = 1.0, step: int = 0):
        self.optimizer, self.d_model, self.warmup, self.factor = optimizer, d_model, warmup, factor
        self.step_num = step
        self._apply()

    @property
    def lr(self) -> float:
        """The rate the next optimiser step will use."""
        return noam_lr(self.step_num + 1, self.d_model, self.warmup, self.factor)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        """Call after ``optimizer.step()``: moves to the next step's rate."""
        self.step_num += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step": self.step_num, "d_model": self.d_model, "warmup": self.warmup, "factor": self.factor}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step"])
        self._apply()
