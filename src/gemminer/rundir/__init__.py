"""A run folder on disk and the files that leave it.

* :mod:`.runs` — :class:`~.runs.RunDir`: config.json (named by its hash), metrics.jsonl,
  summary.json and the run's tensors, read back with checks;
* :mod:`.summary` — the summary's figures (:class:`~.summary.RunSummary`);
* :mod:`.files` — atomic writes and safe loading;
* :mod:`.export` — a ticket as a compact safetensors file, and loading it back;
* :mod:`.interop` — tickets to and from PyTorch's own pruning form (``torch.nn.utils.prune``);
* :mod:`.tracking` — TensorBoard logging of the epoch records.
"""
