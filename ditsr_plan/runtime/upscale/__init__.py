"""Using a trained model on images: :class:`~.pipeline.DiTSRPipeline` (exported folders, runs, checkpoints)
and what ``ditsr-plan upscale`` does with files (``images.py``, ``job.py``)."""
