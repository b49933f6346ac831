"""The paper's evaluation protocol around :mod:`disdiff.metrics`.

* :mod:`~disdiff.evaluation.representations`: read and check ``latents`` (M, N, d) files; per-unit PCA.
* :mod:`~disdiff.evaluation.views`: a dataset whose observations are canonical indices, and the
  row lookup that serves as representation function (no image is read).
* :mod:`~disdiff.evaluation.protocol`: score one file (fresh RandomState(0) per metric), JSON records.
* :mod:`~disdiff.evaluation.runs`: every checkpoint of a run, resumable, in parallel processes, ``--watch``.
* :mod:`~disdiff.evaluation.tables`, :mod:`~disdiff.evaluation.plots`, :mod:`~disdiff.evaluation.aggregate`:
  CSV/markdown per run, PNG per metric, mean ± std over seeds.
"""
