"""Optional experiment tracking: per-epoch metrics to TensorBoard.

``metrics.jsonl`` in the run folder is always written; with ``--tensorboard`` every epoch
record is also logged as scalars ``<phase>/<key>`` (e.g. ``mine/train_acc``,
``finetune/test_acc``) under ``RUN_DIR/tensorboard``. TensorBoard is not a dependency of
gemminer: asking for it without the ``tensorboard`` package installed is a clear error.
"""

from __future__ import annotations

import math
from numbers import Real
from pathlib import Path
from typing import Any

from ..errors import ConfigError


class TensorBoardSink:
    """Writes epoch records as scalars; call :meth:`close` when the stage ends."""

    def __init__(self, log_dir: str | Path, writer_class: Any = None) -> None:
        if writer_class is None:
            try:
                from torch.utils.tensorboard import SummaryWriter as writer_class
            except ImportError:
                raise ConfigError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
        self.writer = writer_class(log_dir=str(log_dir))

    def __call__(self, record: dict) -> None:
        phase, step = record.get("phase", "train"), int(record.get("epoch", 0))
        for key, value in record.items():
            if key in ("phase", "epoch") or isinstance(value, bool):
                continue
            if isinstance(value, Real) and math.isfinite(value):
                self.writer.add_scalar(f"{phase}/{key}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
