"""Executes a compiled schedule graph: trains a DiT super-resolution model term by term.

Four rooms, each a job (docs/architecture.md):

- ``train/``: what one step computes -- the trainer, the loss terms, the generator, the latent space, the
  diffusion, the EMA, the data;
- ``run/``: the loop around the steps -- run folders, checkpoints, resume, signals, faults, logs,
  watch/keep, the matrix, export and offline evaluation;
- ``validate/``: sampling, metrics and pictures of validation;
- ``analysis/``: report and compare, which read run folders only (no torch, nothing of ``train``).

Besides them: ``records.py`` (the typed lines of metrics.jsonl and eval.jsonl, and evals as text),
``distributed.py`` (DDP), ``errors.py`` (the one base class of the runtime's errors) and ``seeds.py``. The
runtime sees the compiled graph and the settings' schemas (``ditsr_plan.settings``), never the plan
language (``dsl``).
"""
