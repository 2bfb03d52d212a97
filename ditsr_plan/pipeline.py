"""A trained model from Python, the way diffusers' pipelines are used (imports torch)::

    from ditsr_plan.pipeline import DiTSRPipeline

    pipe = DiTSRPipeline.from_pretrained("demo-sr")  # a folder 'ditsr-plan export RUN --merge' wrote
    [sr] = pipe(image)

The class lives in ``runtime/upscale/pipeline.py``; this module is its public name, above the runtime (the
package's ``__init__`` stays torch-free and imports nothing of it)."""

from ditsr_plan.runtime.upscale.pipeline import DiTSRPipeline, UntrainedTimestepsWarning

__all__ = ["DiTSRPipeline", "UntrainedTimestepsWarning"]
