"""The vocabulary of plans: the settings of every loss-term kind and block (``schemas``: types, ranges,
defaults, descriptions) and the numbers they are written in (``numbers``: ``3k``, ``1e-4``).

Torch-free and lark-free: ``dsl`` validates plan text against these schemas, ``compiler`` keeps their
frozen instances in the schedule graph, and ``runtime`` reads their attributes -- the runtime imports the
settings, never the parser. Nothing is imported here, so that ``numbers`` does not pull in pydantic.
"""
