"""One training step, readable top to bottom: ask the graph what is live, compute only that, step.

``Trainer.train_step(step, micro_batches)``:
1. weights, live terms and needs of this step come from the compiled schedule graph;
2. per micro-batch: encode HR and LR, sample timesteps and noise, predict the velocity, reconstruct
   x0; decode the pixel patch only if a pixel term is live (or D warms up); compute the live terms,
   weight them, backpropagate;
3. clip, step the optimiser, update the EMA; step the discriminator if it trains at this step.
Every term's first live step is checked: a finite scalar with a gradient path to the generator.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from ditsr_plan.compiler.graph import ScheduleGraph

from .data import Batch, TrainingData
from .device import Placement
from .diffusion import Diffusion
from .distributed import SINGLE, Ranks, average_gradients, sum_floats
from .ema import Ema
from .errors import RunFailure
from .latent import build_latent
from .model import SRDiT
from .seeds import derive_seed, generator
from .terms import StepTensors, TermSetupError, build_term
from .terms.patchgan import PatchGan


def _no_buffer_sync() -> dict:
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def compiled_graphs() -> int:
    """How many graphs torch.compile has built in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class TermCheckError(RunFailure):
    """A term that became live but does not train the generator (the edge_gtmask bug)."""


@dataclass
class StepRecord:
    step: int
    loss: float
    raw: dict[str, float] = field(default_factory=dict)
    grad_norm: float | None = None
    discriminator: dict[str, dict] = field(default_factory=dict)
    gradients: dict | None = None
    nonfinite: list[str] = field(default_factory=list)  # why the step was skipped: terms, or "gradient"
    compiled_graphs: int | None = None  # run compile=true: graphs torch.compile has built so far
    recompiled: bool = False  # this step built a new graph after the first compiled step


class Trainer:
    def __init__(self, graph: ScheduleGraph, placement: Placement, ranks: Ranks = SINGLE):
        self.graph, self.placement, self.ranks = graph, placement, ranks
        blocks = {name: b.values for name, b in graph.blocks.items()}
        self.blocks = blocks
        self.seed = blocks["run"]["seed"]
        device = placement.device
        torch.manual_seed(self.seed)  # parameter initialisation: the same modules for the same seed
        data_block = graph.blocks["data"]
        self.data = TrainingData(data_block.kind, blocks["data"], self.seed)
        self.latent = build_latent(graph.blocks["latent"].kind, blocks["latent"]).to(device)
        if self.data.crop % self.latent.factor:
            raise ValueError(f"data crop {self.data.crop} is not a multiple of the latent factor {self.latent.factor}")
        self.latent_size = self.data.crop // self.latent.factor
        self.model = SRDiT(self.latent.channels, self.latent_size, blocks["model"]).to(device)
        self.first_sample = ranks.rank * self.data.batch_size  # this rank's first sample of a step
        self.net: torch.nn.Module = self.model  # what the step calls: the model, or its DDP wrapper
        if ranks.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # the DiT's buffers (positional embeddings) are constants: synced once at start, not every forward
            self.net = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, **_no_buffer_sync()
            )
        self.diffusion = Diffusion(blocks["diffusion"], device)
        self.terms = {
            name: build_term(name, term.kind, dict(term.settings), self.diffusion).to(device)
            for name, term in graph.terms.items()
        }
        self.compiled = blocks["run"].get("compile", False)
        if self.compiled:
            # the generator alone: the loss terms around it change with the live set, the model's graph does
            # not. The discriminator stays eager: its R1 penalty is a double backward, which torch.compile's
            # AOTAutograd does not support.
            self.net = torch.compile(self.net, backend=blocks["run"]["compile_backend"], dynamic=False)
        self._graphs_seen: int | None = None
        optim = blocks["optim"]
        self.accum, self.grad_clip = optim["accum"], optim["grad_clip"]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=optim["lr"],
            betas=tuple(optim["betas"]),
            weight_decay=optim["weight_decay"],
            **({"fused": True} if device.type == "cuda" else {}),
        )
        ema = blocks.get("ema")
        self.ema = None
        if ema and ema["decay"] > 0:
            self.ema = Ema(self.model, ema["decay"], ema["start"], ema["every"], ema["warmup"])
        self.patch, self.margin = self._patch_geometry(blocks["pixel"]["patch"], blocks["pixel"]["margin"])
        self.checked: set[str] = set()  # terms whose first live step passed the gradient check
        self._try_pixel_terms()

    def _try_pixel_terms(self) -> None:
        """Run every pixel-space term once on a blank patch, so that a patch too small for a network
        (LPIPS-alex needs more than 16 px) stops the run before step 0, not at the first live step."""
        device = self.placement.device
        blank = torch.zeros(1, 3, self.patch, self.patch, device=device)
        probe = StepTensors(
            t=torch.zeros(1, dtype=torch.long, device=device),
            v=blank,
            v_hat=blank,
            x0=blank,
            x0_hat=blank,
            pred_patch=blank,
            gt_patch=blank,
        )
        for name, term in self.terms.items():
            if not term.pixel:
                continue
            try:
                with torch.no_grad(), self.placement.autocast():
                    term(probe)
            except RuntimeError as exc:
                raise TermSetupError(
                    f"term '{name}' ({term.kind}) cannot run on a {self.patch} px pixel patch: "
                    f"{exc}. Use a larger 'pixel patch=' (and data crop)."
                ) from None

    # ---- the pixel patch -----------------------------------------------------------------------------

    def _patch_geometry(self, patch: int, margin: int) -> tuple[int, int]:
        """The patch fits the crop: it shrinks to the crop, then the margin to what is left."""
        patch = min(patch, self.data.crop)
        margin = min(margin, (self.data.crop - patch) // 2)
        return patch, margin

    def pixel_patch(self, x0_hat: torch.Tensor, hr: torch.Tensor, g: torch.Generator):
        """Decode a random window of the reconstructed latent with a margin, keep the central
        ``patch`` pixels, and cut the matching GT patch (as the reference does)."""
        f = self.latent.factor
        window = min(self.latent_size, math.ceil((self.patch + 2 * self.margin) / f))
        y = int(torch.randint(0, self.latent_size - window + 1, (), generator=g))
        x = int(torch.randint(0, self.latent_size - window + 1, (), generator=g))
        decoded = self.latent.decode(x0_hat[:, :, y : y + window, x : x + window])
        off = (window * f - self.patch) // 2
        pred = decoded[:, :, off : off + self.patch, off : off + self.patch]
        py, px = y * f + off, x * f + off
        gt = hr[:, :, py : py + self.patch, px : px + self.patch]
        return pred, gt

    # ---- one step ------------------------------------------------------------------------------------

    def forward(self, batch: Batch, step: int, micro: int, decode: bool) -> StepTensors:
        device = self.placement.device
        hr, lr_up = batch.hr.to(device), batch.lr_up.to(device)
        n = hr.shape[0]
        diff = self.blocks["diffusion"]
        with torch.no_grad():
            x0, lr_latent = self.latent.encode(hr), self.latent.encode(lr_up)
        # target=residual: the diffusion runs on HR latent - LR latent, and the LR latent is added back
        base = lr_latent if diff["target"] == "residual" else torch.zeros_like(lr_latent)
        # every sample draws from its own generator (seed, step, micro, global sample index), so a
        # sample's timestep and noise do not depend on how the batch is split across DDP ranks
        ts, noises, stds, keeps, cond_noises = [], [], [], [], []
        for j in range(n):
            g = generator(self.seed, "diffusion", step, micro, self.first_sample + j)
            ts.append(self.diffusion.sample_timesteps(1, g, torch.device("cpu")))
            noises.append(torch.randn(x0.shape[1:], generator=g))
            stds.append(torch.rand(1, generator=g) * diff["lr_noise"])
            keeps.append((torch.rand(1, generator=g) >= diff["cond_dropout"]).float())
            cond_noises.append(torch.randn(lr_latent.shape[1:], generator=g))
        t = torch.cat(ts).to(device)
        noise = torch.stack(noises).to(device)
        cond_std = torch.cat(stds).view(-1, 1, 1, 1).to(device)
        keep = torch.cat(keeps).view(-1, 1, 1, 1).to(device)
        cond = (lr_latent + cond_std * torch.stack(cond_noises).to(device)) * keep
        aug_level = (cond_std * keep).flatten()  # the model is told the augmentation (0 for a dropped LR)
        x_t = self.diffusion.add_noise(x0 - base, noise, t)
        v = self.diffusion.velocity(x0 - base, noise, t)
        v_hat = self.net(x_t, cond, t, aug_level)
        x0_hat = self.diffusion.reconstruct_x0(x_t, v_hat.float(), t) + base
        s = StepTensors(t=t, v=v, v_hat=v_hat, x0=x0, x0_hat=x0_hat)
        if decode:
            s.pred_patch, s.gt_patch = self.pixel_patch(x0_hat, hr, generator(self.seed, "patch", step, micro))
        return s

    def train_step(self, step: int, batches: list[Batch], shadow: bool = False, grads: bool = False) -> StepRecord:
        # randomness inside libraries (diffusers' class-label dropout, dropout layers) draws from the
        # global generator: seed it from (seed, step) too, so that a step is a function of its number
        torch.manual_seed(derive_seed(self.seed, "global", step))
        weights = self.graph.weights_at(step)
        live = self.graph.live_terms(step)
        needs = self.graph.needs_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = weights["lr"]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        record = StepRecord(step, 0.0)
        first = None
        patches = []  # every micro-batch's (GT, prediction) pixel patches, for the discriminator
        for micro, batch in enumerate(batches):
            last = micro == len(batches) - 1
            # under DDP the gradients are all-reduced once per optimiser step, in the last micro-batch
            sync = contextlib.nullcontext() if last or not self.ranks.enabled else self.net.no_sync()
            with sync:
                with self.placement.autocast():
                    s = self.forward(batch, step, micro, decode=needs.pixel or needs.discriminator)
                    raw = {name: self.terms[name](s) for name in live}
                if micro == 0:
                    self.check_first_live(step, raw, s)
                    if grads:
                        record.gradients = self.gradient_diagnostics(raw, weights, s)
                    first = s
                if needs.discriminator:
                    patches.append((s.gt_patch.detach(), s.pred_patch.detach()))
                loss = sum(weights[n] * raw[n] for n in live) / len(batches)
                if live:
                    loss.backward()
            for name, value in raw.items():
                record.raw[name] = record.raw.get(name, 0.0) + float(value.detach()) / len(batches)
            record.loss += float(loss.detach()) if live else 0.0
        if self.ranks.enabled:  # the logged values and the skip decision are the same on every rank
            names = list(record.raw)
            summed = sum_floats(self.ranks, [record.raw[n] for n in names] + [record.loss], self.placement.device)
            record.raw = {n: v / self.ranks.world for n, v in zip(names, summed, strict=False)}
            record.loss = summed[-1] / self.ranks.world
        if self.compiled:
            graphs = compiled_graphs()
            record.compiled_graphs = graphs
            record.recompiled = self._graphs_seen is not None and graphs > self._graphs_seen
            self._graphs_seen = graphs
        record.grad_norm = self._clip()
        record.nonfinite = [n for n, v in record.raw.items() if not math.isfinite(v)]
        if not record.nonfinite and not math.isfinite(record.grad_norm):
            record.nonfinite = ["gradient"]
        if record.nonfinite:  # skip the update: no optimiser, EMA or discriminator step
            self.optimizer.zero_grad(set_to_none=True)
            return record
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, step)
        if needs.discriminator:
            for name, term in self.terms.items():
                if isinstance(term, PatchGan):
                    record.discriminator[name] = term.train_discriminator(
                        patches,
                        step,
                        weights.get("lr_d", term.settings["lr"]),
                        lambda disc: average_gradients(self.ranks, disc),
                    )
            if self.ranks.enabled:  # log the ranks' mean, as for the generator's terms
                record.discriminator = self._mean_over_ranks(record.discriminator)
        if shadow:
            record.raw.update(self.shadow_raw(first, batches[0], step, live))
        return record

    def _mean_over_ranks(self, records: dict[str, dict]) -> dict[str, dict]:
        keys = [(name, key) for name, rec in records.items() for key, v in rec.items() if v is not None]
        summed = sum_floats(self.ranks, [records[n][k] for n, k in keys], self.placement.device)
        out = {name: dict(rec) for name, rec in records.items()}
        for (name, key), total in zip(keys, summed, strict=True):
            out[name][key] = total / self.ranks.world
        return out

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        if self.grad_clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))

    def check_first_live(self, step: int, raw: dict[str, torch.Tensor], s: StepTensors) -> None:
        """The first time a term is live: a finite scalar whose gradient reaches the generator's output."""
        for name, value in raw.items():
            if name in self.checked:
                continue
            problem = None
            if value.ndim != 0:
                problem = f"returned a tensor of shape {tuple(value.shape)}, not a scalar"
            elif not torch.isfinite(value.detach()):
                problem = f"returned {float(value.detach())}"
            elif not value.requires_grad:
                problem = "has no gradient path to the generator"
            else:
                (grad,) = torch.autograd.grad(value, s.v_hat, retain_graph=True, allow_unused=True)
                if grad is None or not bool(grad.abs().sum() > 0):
                    problem = "has no gradient path to the generator (its gradient on the model output is 0)"
            if problem:
                raise TermCheckError(f"term '{name}' became live at step {step} but {problem}")
            self.checked.add(name)

    def gradient_diagnostics(self, raw: dict[str, torch.Tensor], weights: dict[str, float], s: StepTensors) -> dict:
        """For the live terms: the norm of each weighted term's gradient with respect to the model output
        (the predicted velocity), and the pairwise cosine similarity of those gradients -- negative when
        two terms pull the output in opposite directions (the loss notes' "conflicting gradients")."""
        grads = {}
        for name, value in raw.items():
            (g,) = torch.autograd.grad(weights[name] * value, s.v_hat, retain_graph=True, allow_unused=True)
            if g is not None:
                grads[name] = g.detach().float().flatten()
        names = list(grads)
        cosine = {}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                denom = grads[a].norm() * grads[b].norm()
                cosine[f"{a}|{b}"] = float(grads[a] @ grads[b] / denom) if denom > 0 else None
        return {"norm": {n: float(g.norm()) for n, g in grads.items()}, "cosine": cosine}

    @torch.no_grad()
    def shadow_raw(self, s: StepTensors, batch: Batch, step: int, live: list[str]) -> dict[str, float]:
        """Raw values of the terms that are not live, at a log step, without gradient."""
        idle = [n for n in self.graph.terms if n not in live]
        if not idle:
            return {}
        if s.pred_patch is None and any(self.terms[n].pixel for n in idle):
            s.pred_patch, s.gt_patch = self.pixel_patch(
                s.x0_hat, batch.hr.to(self.placement.device), generator(self.seed, "patch", step, 0)
            )
        with self.placement.autocast():
            return {n: float(self.terms[n](s)) for n in idle}

    # ---- state ---------------------------------------------------------------------------------------

    def parameter_counts(self) -> dict[str, int]:
        counts = {"generator": sum(p.numel() for p in self.model.parameters())}
        for name, term in self.terms.items():
            if isinstance(term, PatchGan):
                counts[f"discriminator {name}"] = sum(p.numel() for p in term.disc.parameters())
        return counts
