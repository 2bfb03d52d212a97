"""Validation: sampling (``sampler.py``), metrics (``metrics.py``), the images (``images.py``), pictures
(``pictures.py``), and the evaluator a run calls (``evaluator.py``)."""
