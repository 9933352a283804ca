"""Progress bars for each stage, with an ETA for the whole run.

Work is counted in "forward-pass equivalents" (a training image costs ~3: forward + backward), so the run's
ETA comes from the measured rate over everything done so far, across stages.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

TRAIN_COST, EVAL_COST = 3.0, 1.0


def format_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunProgress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.total = 0.0
        self.done = 0.0
        self.start = time.perf_counter()
        self.bar: tqdm | None = None

    def plan(self, units: float) -> None:
        self.total += units

    def eta(self) -> str:
        if self.done <= 0:
            return "?"
        rate = self.done / (time.perf_counter() - self.start)
        return format_seconds((self.total - self.done) / rate)

    def open(self, desc: str, total: int, unit: str = "it") -> None:
        self.close()
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not self.enabled, leave=True, dynamic_ncols=True,
                        file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10)

    def advance(self, steps: int, units: float, **postfix) -> None:
        self.done += units
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix(postfix | {"run ETA": self.eta()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
