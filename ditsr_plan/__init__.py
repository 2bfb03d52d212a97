"""ditsr-plan: loss schedules for diffusion-transformer super-resolution, as plan files.

Plan text flows one way: ``dsl`` (text -> validated spec) -> ``compiler`` (spec -> schedule
graph; lint, diff and show read the graph) -> ``runtime`` (executes the graph).
"""

__version__ = "0.1.0"
