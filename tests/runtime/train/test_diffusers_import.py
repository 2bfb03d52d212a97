"""The DiT class is imported without diffusers' transformers package (and so without peft): the same class,
at half the import cost of a tiny run."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
from ditsr_plan.runtime.train.diffusers_import import model_class
from ditsr_plan.runtime.train.generators.pretrained import transformer_class

cls = model_class("diffusers.models.transformers.dit_transformer_2d", "DiTTransformer2DModel")
assert transformer_class("dit") is cls
heavy = [m for m in ("peft", "diffusers.models.transformers") if m in sys.modules]
model = cls(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=1,
            sample_size=8, patch_size=2, num_embeds_ada_norm=10)
from diffusers import DiTTransformer2DModel  # the whole package now: the class is the same
print(heavy, DiTTransformer2DModel is cls, type(model).__module__)
"""


def test_the_dit_class_comes_without_peft_and_is_diffusers_own():
    run = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["[]", "True", "diffusers.models.transformers.dit_transformer_2d"]
