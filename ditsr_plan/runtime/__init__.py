"""Executes a compiled schedule graph: trains a DiT super-resolution model term by term.

Only the terms live at a step are computed; the pixel patch is decoded only when a pixel-space term
(or the discriminator's warm-up) needs it. CUDA (bf16 autocast) when present, the same code on CPU.
"""
