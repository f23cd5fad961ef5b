"""A run's settings: what can be given and how each default is chosen.

* :mod:`.config` — the typed, frozen settings (:class:`~.config.RunConfig` and its parts)
  and the ``DEFAULT_*`` constants;
* :mod:`.options` — every command-line / sweep option, once (flag, sweep key, check);
* :mod:`.recipe` — the paper's table rows (``recipes/*.yaml``) and their budget rules;
* :mod:`.resolve` — the only place a default is chosen, for the command line, sweeps, the
  Python API and ``gemminer finetune``'s overrides;
* :mod:`.explain` — what a run resolved, in words (it only describes).
"""
