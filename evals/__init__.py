"""Evaluate Cairn offline: ``cairn eval`` runs ``evals.runner`` over a dataset (``evals.datasets``, files in
``evals/datasets/``) and scores it (``evals.metrics``); reports (``evals.report``), the RAGAS import
workaround (``evals.ragas_compat``), retrieval quality on the golden set (``evals.retrieval``)."""
