"""The stages of a run on disk: prune (any method), finetune, evaluate, sanity-check.

The command line is a thin layer over these functions; each reads and writes a run folder
(see :mod:`gemminer.rundir.runs`), skips work that is already done, and returns the run's
:class:`~gemminer.rundir.summary.RunSummary` (``eval`` returns its accuracies). Every method's
ticket is judged and finetuned by the same code.

* :mod:`.assemble` — the run's data, model and batch loaders;
* :mod:`.claim` — how a stage takes a run folder (resume, skip, refuse, start afresh);
* :mod:`.ticket` — the ticket's files, its model and its pre-finetune accuracy;
* :mod:`.describe` — messages, per-epoch lines, divergence advice;
* :mod:`.prune`, :mod:`.finetuning`, :mod:`.evaluate`, :mod:`.sanity` — the stages.
"""

from .assemble import architecture, build_model, eval_loaders, load_data, train_loader
from .evaluate import eval_run
from .finetuning import finetune_run
from .prune import density_shortfall, prune_run
from .sanity import SANITY_CHECKS, sanity_run
from .ticket import calibration_batches, mask_shapes, model_shapes, ticket_model

__all__ = [
    "SANITY_CHECKS",
    "architecture",
    "build_model",
    "calibration_batches",
    "density_shortfall",
    "eval_loaders",
    "eval_run",
    "finetune_run",
    "load_data",
    "mask_shapes",
    "model_shapes",
    "prune_run",
    "sanity_run",
    "ticket_model",
    "train_loader",
]
