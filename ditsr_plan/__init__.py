"""ditsr-plan: loss schedules for diffusion-transformer super-resolution, as plan files.

Plan text flows one way: ``dsl`` (text -> validated spec) -> ``compiler`` (spec -> schedule
graph; lint, diff and show read the graph) -> ``runtime`` (executes the graph).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # the pipeline needs torch: imported on first use, so that `import ditsr_plan` stays light
    if name == "DiTSRPipeline":
        from ditsr_plan.runtime.upscale.pipeline import DiTSRPipeline

        return DiTSRPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
