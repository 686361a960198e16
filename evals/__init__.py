"""Offline evaluation: ``cairn eval`` (``evals.runner``), reports (``evals.report``), the RAGAS import
workaround (``evals.ragas_compat``), datasets in ``evals/datasets/``, the retrieval golden set."""
