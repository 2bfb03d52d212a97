"""One training step, readable top to bottom: ask the graph what is live, compute only that, step.

``Trainer.train_step(step, micro_batches)``:
1. weights, live terms and needs of this step come from the compiled schedule graph;
2. per micro-batch: encode HR and LR, sample timesteps and noise, predict the velocity, reconstruct
   x0; decode the pixel patch only if a pixel term is live (or a discriminator trains); compute the live
   terms, weight them, backpropagate;
3. clip, step the optimiser, update the EMA; then each term's after-step (a discriminator's step).
Every term's first live step is checked: a finite scalar with a gradient path to the generator.

The trainer owns its state: ``state_dict()`` gives what a checkpoint holds, ``load_state_dict()`` puts
it back.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ditsr_plan.compiler.graph import ScheduleGraph

from ..distributed import SINGLE, Ranks, average_gradients, sum_floats
from ..seeds import derive_seed, generator
from .checks import check_first_live, gradient_diagnostics
from .data import Batch, TrainingData
from .device import Placement
from .diffusion import Diffusion
from .ema import Ema
from .generators import (
    describe,
    fingerprint,
    latent_and_generator,
    load_trained,
    parameter_groups,
    trainable_parameters,
    trainable_state_dict,
)
from .optimizer_state import optimizer_from_flat, optimizer_to_flat
from .pixel_patch import PixelPatch
from .terms import StepTensors, TermContext, TermSetupError, build_term


def dynamo_graphs() -> int:
    """How many graphs torch.compile (TorchDynamo) has built in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _no_buffer_sync() -> dict:
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def _built(name: str, term, context: TermContext):
    """The term's module; a term that cannot be set up is named with its plan position."""
    try:
        return build_term(name, term.settings, context)
    except TermSetupError as exc:
        raise TermSetupError(f"{term.origin}: {exc}" if term.origin else str(exc)) from None


@dataclass
class StepRecord:
    step: int
    loss: float
    raw: dict[str, float] = field(default_factory=dict)
    grad_norm: float | None = None
    after_step: dict[str, dict] = field(default_factory=dict)  # each term's after-step record (its D step)
    gradients: dict | None = None
    nonfinite: list[str] = field(default_factory=list)  # why the step was skipped: terms, or "gradient"
    dynamo_graphs: int | None = None  # run compile=true: graphs torch.compile has built so far
    recompiled: bool = False  # this step built a new graph after the first compiled step


class Trainer:
    def __init__(self, graph: ScheduleGraph, placement: Placement, ranks: Ranks = SINGLE, note=None):
        """``note(word)`` hears each slow stage of the build as it begins (the run's console)."""
        note = note or (lambda word: None)
        self.graph, self.placement, self.ranks = graph, placement, ranks
        self.run_settings, self.diffusion_settings = graph.block("run"), graph.block("diffusion")
        self.seed = self.run_settings.seed
        device = placement.device
        torch.manual_seed(self.seed)  # parameter initialisation: the same modules for the same seed
        note(f"reading the data ({graph.blocks['data'].kind}) ...")
        self.data = TrainingData(graph.block("data"), self.seed, graph.block("degrade"), device.type)
        self.latent, self.model = latent_and_generator(graph, device, note)
        pixel = graph.block("pixel")
        self.patch = PixelPatch.fitted(pixel.patch, pixel.margin, self.data.crop, self.latent.factor, pixel.clamp)
        self.net = self._wrapped(self.model)  # what the step calls: the model, under DDP and torch.compile
        self.first_sample = ranks.rank * self.data.batch_size  # this rank's first sample of a step
        self.diffusion = Diffusion(self.diffusion_settings, device)
        context = TermContext(self.diffusion)
        note(f"building the loss terms ({', '.join(sorted({t.kind for t in graph.terms.values()}))}) ...")
        self.terms = {name: _built(name, term, context).to(device) for name, term in graph.terms.items()}
        optim = graph.block("optim")
        self.accum, self.grad_clip = optim.accum, optim.grad_clip
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model),
            lr=optim.lr,
            betas=optim.betas,
            weight_decay=optim.weight_decay,
            **({"fused": True} if device.type == "cuda" else {}),
        )
        ema = graph.block("ema")
        self.ema = None
        if ema and ema.decay > 0:
            self.ema = Ema(self.model, ema.decay, ema.start, ema.every, ema.warmup)
        self.checked: set[str] = set()  # terms whose first live step passed the gradient check
        self._graphs_seen: int | None = None
        self._try_pixel_terms()

    def _wrapped(self, model: torch.nn.Module) -> Any:
        net: Any = model
        if self.ranks.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device = self.placement.device
            # the DiT's buffers (positional embeddings) are constants: synced once at start, not every forward
            net = DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None, **_no_buffer_sync()
            )
        if self.compiled:
            # the generator alone: the loss terms around it change with the live set, the model's graph does
            # not. A discriminator stays eager: its R1 penalty is a double backward, which torch.compile's
            # AOTAutograd does not support.
            net = torch.compile(net, backend=self.run_settings.compile_backend, dynamic=False)
        return net

    @property
    def compiled(self) -> bool:
        return self.run_settings.compile

    def _try_pixel_terms(self) -> None:
        """Run every pixel-space term once on a blank patch, so that a patch too small for a network
        (LPIPS-alex needs more than 16 px) stops the run before step 0, not at the first live step."""
        device = self.placement.device
        blank = torch.zeros(1, 3, self.patch.size, self.patch.size, device=device)
        probe = StepTensors(torch.zeros(1, dtype=torch.long, device=device), blank, blank, blank, blank, blank, blank)
        for name, term in self.graph.terms.items():
            if not term.pixel:
                continue
            try:
                with torch.no_grad(), self.placement.autocast():
                    self.terms[name](probe)
            except RuntimeError as exc:
                raise TermSetupError(
                    f"term '{name}' ({term.kind}) cannot run on a {self.patch.size} px pixel patch: "
                    f"{exc}. Use a larger 'pixel patch=' (and data crop)."
                ) from None

    # ---- one step ------------------------------------------------------------------------------------

    def forward(self, batch: Batch, step: int, micro: int, decode: bool) -> StepTensors:
        """The diffusion forward pass of one micro-batch: noise, predict, reconstruct (and decode the patch)."""
        device = self.placement.device
        hr = batch.hr.to(device, non_blocking=True)
        lr_up = self.data.lr_up(batch, hr)
        diffusion = self.diffusion_settings
        with torch.no_grad():
            x0, lr_latent = self.latent.encode(hr), self.latent.encode(lr_up)
        # target=residual: the diffusion runs on HR latent - LR latent, and the LR latent is added back
        base = lr_latent if diffusion.target == "residual" else torch.zeros_like(lr_latent)
        t, noise, lr_noise, lr_std, keep = self._draws(x0, lr_latent, step, micro)
        x_t = self.diffusion.add_noise(x0 - base, noise, t)
        v = self.diffusion.velocity(x0 - base, noise, t)
        cond = lr_latent + lr_std * lr_noise
        if diffusion.dropout_drops == "style":  # a dropped sample loses only the adapter's style vector
            v_hat = self.net(x_t, cond, t, lr_std.flatten(), style_keep=keep.flatten())
        else:  # the whole LR latent; the model is told the augmentation (0 for a dropped LR)
            v_hat = self.net(x_t, cond * keep, t, (lr_std * keep).flatten())
        x0_hat = self.diffusion.reconstruct_x0(x_t, v_hat.float(), t) + base
        s = StepTensors(t=t, v=v, v_hat=v_hat, x0=x0, x0_hat=x0_hat)
        if decode:
            g = generator(self.seed, "patch", step, micro)
            s.pred_patch, s.gt_patch = self.patch.cut(self.latent.decode, x0_hat, hr, g)
        return s

    def _draws(self, x0: torch.Tensor, lr_latent: torch.Tensor, step: int, micro: int):
        """Timesteps, noise, LR noise, its std and the LR keep mask of a micro-batch. Every sample draws from
        its own generator (seed, step, micro, global sample index), so a sample's draws do not depend on how
        the batch is split across DDP ranks."""
        diffusion = self.diffusion_settings
        cpu = torch.device("cpu")
        ts, noises, stds, keeps, lr_noises = [], [], [], [], []
        for j in range(x0.shape[0]):
            g = generator(self.seed, "diffusion", step, micro, self.first_sample + j)
            ts.append(self.diffusion.sample_timesteps(1, g, cpu))
            noises.append(torch.randn(x0.shape[1:], generator=g))
            stds.append(torch.rand(1, generator=g) * diffusion.lr_noise)
            keeps.append((torch.rand(1, generator=g) >= diffusion.cond_dropout).float())
            lr_noises.append(torch.randn(lr_latent.shape[1:], generator=g))
        device = self.placement.device
        return (
            torch.cat(ts).to(device),
            torch.stack(noises).to(device),
            torch.stack(lr_noises).to(device),
            torch.cat(stds).view(-1, 1, 1, 1).to(device),
            torch.cat(keeps).view(-1, 1, 1, 1).to(device),
        )

    def train_step(
        self, step: int, batches: list[Batch], shadow: bool = False, grads: bool = False, on_micro=None
    ) -> StepRecord:
        """One optimiser step over ``batches`` (its micro-batches); ``on_micro(done, total)`` hears each
        micro-batch as it finishes (the console's progress inside a slow step)."""
        # randomness inside libraries (dropout layers) draws from the global generator: seed it from
        # (seed, step) too, so that a step is a function of its number
        torch.manual_seed(derive_seed(self.seed, "global", step))
        weights, live, needs = self.graph.weights_at(step), self.graph.live_terms(step), self.graph.needs_at(step)
        for group in self.optimizer.param_groups:  # the lr knob, times the group's scale (model cond_lr)
            group["lr"] = weights["lr"] * group.get("lr_scale", 1.0)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        record = StepRecord(step, 0.0)
        patches = []  # every micro-batch's (GT, prediction) pixel patches, for the terms' after-steps
        first = None
        for micro, batch in enumerate(batches):
            s = self._backward(batch, step, micro, len(batches), weights, live, needs, record, grads and micro == 0)
            if first is None:
                first = s
            if on_micro is not None:
                on_micro(micro + 1, len(batches))
            if needs.discriminator:
                pred, gt = s.patches()
                patches.append((gt.detach(), pred.detach()))
        self._same_on_every_rank(record)
        self._count_dynamo_graphs(record)
        record.grad_norm = self._clip()
        record.nonfinite = [n for n, v in record.raw.items() if not math.isfinite(v)]
        if not record.nonfinite and not math.isfinite(record.grad_norm):
            record.nonfinite = ["gradient"]
        if record.nonfinite:  # skip the update: no optimiser, EMA or after-step
            self.optimizer.zero_grad(set_to_none=True)
            return record
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, step)
        if needs.discriminator:
            record.after_step = self._after_step(patches, step, weights)
        if shadow:
            assert first is not None  # a step has at least one micro-batch
            record.raw.update(self.shadow_raw(first, batches[0], step, live))
        return record

    def _backward(self, batch, step, micro, micro_batches, weights, live, needs, record, diagnose) -> StepTensors:
        """Forward, live terms, weighted loss and backward of one micro-batch; its raw values into ``record``."""
        last = micro == micro_batches - 1
        # under DDP the gradients are all-reduced once per optimiser step, in the last micro-batch
        sync = contextlib.nullcontext() if last or not self.ranks.enabled else self.net.no_sync()
        with sync:
            with self.placement.autocast():
                s = self.forward(batch, step, micro, decode=needs.pixel or needs.discriminator)
                raw = {name: self.terms[name](s) for name in live}
            if micro == 0:
                check_first_live(step, raw, s, self.checked)
            if diagnose:
                record.gradients = gradient_diagnostics(raw, weights, s)
            loss = sum(weights[n] * raw[n] for n in live) / micro_batches
            if live:
                loss.backward()
        for name, value in raw.items():
            record.raw[name] = record.raw.get(name, 0.0) + float(value.detach()) / micro_batches
        record.loss += float(loss.detach()) if live else 0.0
        return s

    def _after_step(self, patches: list, step: int, weights: dict[str, float]) -> dict[str, dict]:
        """Each live term's after-step (a discriminator's step), at its learning rate knob when it has one."""
        records = {}
        for name, term in self.terms.items():
            knob = self.graph.terms[name].lr_knob
            lr = weights[knob] if knob else None  # None: the term's own setting
            result = term.after_step(patches, step, lr, lambda module: average_gradients(self.ranks, module))
            if result is not None:
                records[name] = result
        if self.ranks.enabled:  # log the ranks' mean, as for the generator's terms
            records = self._mean_over_ranks(records)
        return records

    def _same_on_every_rank(self, record: StepRecord) -> None:
        """Under DDP the logged values, and so the skip decision, are the ranks' means."""
        if not self.ranks.enabled:
            return
        names = list(record.raw)
        summed = sum_floats(self.ranks, [record.raw[n] for n in names] + [record.loss], self.placement.device)
        record.raw = {n: v / self.ranks.world for n, v in zip(names, summed, strict=False)}
        record.loss = summed[-1] / self.ranks.world

    def _count_dynamo_graphs(self, record: StepRecord) -> None:
        if not self.compiled:
            return
        graphs = dynamo_graphs()
        record.dynamo_graphs = graphs
        record.recompiled = self._graphs_seen is not None and graphs > self._graphs_seen
        self._graphs_seen = graphs

    def _mean_over_ranks(self, records: dict[str, dict]) -> dict[str, dict]:
        keys = [(name, key) for name, rec in records.items() for key, v in rec.items() if v is not None]
        summed = sum_floats(self.ranks, [records[n][k] for n, k in keys], self.placement.device)
        out = {name: dict(rec) for name, rec in records.items()}
        for (name, key), total in zip(keys, summed, strict=True):
            out[name][key] = total / self.ranks.world
        return out

    def _clip(self) -> float:
        params = [p for p in trainable_parameters(self.model) if p.grad is not None]
        if not params:
            return 0.0
        if self.grad_clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))

    @torch.no_grad()
    def shadow_raw(self, s: StepTensors, batch: Batch, step: int, live: list[str]) -> dict[str, float]:
        """Raw values of the terms that are not live, at a log step, without gradient."""
        idle = [n for n in self.graph.terms if n not in live]
        if not idle:
            return {}
        if s.pred_patch is None and any(self.graph.terms[n].pixel for n in idle):
            hr, g = batch.hr.to(self.placement.device), generator(self.seed, "patch", step, 0)
            s.pred_patch, s.gt_patch = self.patch.cut(self.latent.decode, s.x0_hat, hr, g)
        with self.placement.autocast():
            return {n: float(self.terms[n](s)) for n in idle}

    # ---- state ---------------------------------------------------------------------------------------

    def trained_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every tensor training changes, by group: the generator's trained weights, their EMA, the terms'
        own modules (a discriminator). What a checkpoint holds, and what DDP ranks must agree on."""
        groups = {"generator": trainable_state_dict(self.model)}
        if self.ema is not None:
            groups["ema"] = self.ema.state_dict()
        for name, term in self.terms.items():
            for part, module in term.own_modules().items():
                groups[f"term-{name}-{part}"] = module.state_dict()
        return groups

    def parameter_counts(self) -> dict[str, str]:
        info = describe(self.model)
        counts = {"generator": f"{info['parameters'] / 1e6:.2f}M"}
        if info["trained"] != info["parameters"]:
            counts["generator"] += f" ({info['trained'] / 1e6:.2f}M trained)"
        for name, term in self.terms.items():
            for part, module in term.own_modules().items():
                counts[f"{part} of {name}"] = f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"
        return counts

    def state_dict(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        """(tensor groups, JSON state) of everything a resumed run needs: weights, optimiser states, the EMA's
        update count, the terms' own state, the terms already checked, skipped images, the RNG."""
        tensors = dict(self.trained_tensors())
        state: dict = {
            "checked_terms": sorted(self.checked),
            "skipped_images": self.data.stats.skipped,
            "base": fingerprint(self.model),
        }
        optimizers: dict[str, torch.optim.Optimizer] = {"generator": self.optimizer}
        for name, term in self.terms.items():
            optimizers.update({f"term-{name}-{part}": opt for part, opt in term.optimizers().items()})
        state["optimizers"] = {}
        for key, optimizer in optimizers.items():
            tensors[f"{key}-optimizer"], state["optimizers"][key] = optimizer_to_flat(optimizer)
        state["terms"] = {name: term.state() for name, term in self.terms.items()}
        if self.ema is not None:
            state["ema"] = self.ema.state()
        tensors["rng"] = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng"]["torch_cuda"] = torch.cuda.get_rng_state()
        return tensors, state

    def _load_generator(self, tensors: dict[str, torch.Tensor]) -> None:
        """The trained weights into the generator; anything else a checkpoint lacks must be frozen."""
        misfit = load_trained(self.model, tensors)
        if misfit:
            raise ValueError(f"checkpoint does not fit the generator: {misfit}")

    def load_state_dict(self, tensors, state: dict) -> None:
        """Put back what :meth:`state_dict` gave; ``tensors(group)`` loads one tensor group."""
        self._load_generator(tensors("generator"))
        if self.ema is not None:
            self.ema.load_state_dict(tensors("ema"))
        for name, term in self.terms.items():
            for part, module in term.own_modules().items():
                module.load_state_dict(tensors(f"term-{name}-{part}"))
        optimizers: dict[str, torch.optim.Optimizer] = {"generator": self.optimizer}
        for name, term in self.terms.items():
            optimizers.update({f"term-{name}-{part}": opt for part, opt in term.optimizers().items()})
        for key, optimizer in optimizers.items():
            optimizer_from_flat(optimizer, tensors(f"{key}-optimizer"), state["optimizers"][key])
        for name, term in self.terms.items():
            term.restore(state["terms"].get(name, {}))
        if self.ema is not None:
            self.ema.restore(state["ema"])
        rng = tensors("rng")
        torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["torch_cuda"])
        self.checked = set(state["checked_terms"])
        self.data.stats.skipped.update(state["skipped_images"])
