"""Diffusion over feature vectors: a DDPM noise schedule, a few-step DDIM sampler and a vector denoiser.

The schedules and the sampler's update rule are ``diffusers``' (``DDPMScheduler`` for the betas,
``DDIMScheduler`` for the reverse steps), imported lazily so ``import ltbench`` does not pay for them.
Training never calls a scheduler: the cumulative alphas are a device buffer gathered with device-side
timesteps, so a training step has no host sync and no scheduler state. Sampling keeps one DDIM
scheduler per number of steps (diffusers schedulers are stateful through ``set_timesteps``) and starts from noise
drawn by a generator seeded from ``seed`` alone, so it is independent of the global random state.

``VectorDenoiser`` predicts the noise (or the clean vector) from a noisy vector x_k, the step k and
condition vectors. Its blocks interact with the condition at every call, which is at every reverse
step: ``add`` (the conditions' projection added to the hidden state), ``xattn`` (the hidden state
attends to the condition tokens, output added back) or ``gated`` (a sigmoid gate of [hidden; condition]
scales the condition's projection, output added back).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Sequence

import torch
from torch import nn

Prediction = Literal["epsilon", "sample"]
Interaction = Literal["add", "xattn", "gated"]
Arch = Literal["mlp", "transformer"]


class NoiseSchedule(nn.Module):
    """DDPM forward process and DDIM reverse sampling for (B, D) vectors.

    ``prediction``: what the denoiser predicts, the noise (``epsilon``) or the clean vector (``sample``).
    ``clip_sample``: clamp each reverse step's clean-vector estimate to [-c, c] (diffusers'
    ``clip_sample_range``), which keeps a few-step sampler of a weak noise predictor from diverging
    (an epsilon error is amplified by 1 / sqrt(abar_k) at high noise).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: Prediction = "epsilon",
        timestep_spacing: str = "trailing",
        clip_sample: Optional[float] = None,
    ) -> None:
        super().__init__()
        from diffusers import DDPMScheduler

        if prediction not in ("epsilon", "sample"):
            raise ValueError(f"prediction={prediction!r}; expected 'epsilon' or 'sample'")
        self.ddpm = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type=prediction,
            clip_sample=False,
            timestep_spacing=timestep_spacing,
        )
        self.num_train_timesteps = num_train_timesteps
        self.prediction = prediction
        self.clip_sample = clip_sample
        self._samplers: dict[int, tuple[Any, list[int]]] = {}
        self._starts: dict[tuple, torch.Tensor] = {}
        self.register_buffer("alphas_cumprod", self.ddpm.alphas_cumprod.clone().float(), persistent=False)

    def sample_timesteps(self, n: int, device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Uniform training steps in [0, T), drawn on the device."""
        return torch.randint(0, self.num_train_timesteps, (n,), device=device, generator=generator)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (DDPM's closed-form forward process)."""
        abar = self.alphas_cumprod[t].to(x0.dtype).unsqueeze(-1)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise if self.prediction == "epsilon" else x0

    def predict_x0(self, x_t: torch.Tensor, output: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean-vector estimate implied by one denoiser output (exact for ``sample``)."""
        if self.prediction == "sample":
            return output
        abar = self.alphas_cumprod[t].to(x_t.dtype).unsqueeze(-1)
        return (x_t - (1.0 - abar).sqrt() * output) / abar.sqrt()

    def loss(self, output: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared error to the prediction target, (B,)."""
        return (output - self.target(x0, noise)).pow(2).mean(-1)

    def sample(
        self,
        denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        shape: Sequence[int],
        steps: int,
        seed: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Deterministic DDIM (eta 0) from one seeded noise vector shared by the batch.

        ``denoise(x_t, t)`` gets t as a (B,) device tensor. Sharing the start vector makes every
        sample's output a function of its own condition alone, whatever the batch it sits in.
        """
        sched, timesteps = self.sampler(steps)
        x = self._start(seed, shape[-1], torch.device(device), dtype).expand(*shape).contiguous()
        for t in timesteps:
            out = denoise(x, torch.full((shape[0],), t, device=device, dtype=torch.long))
            x = sched.step(out, t, x, eta=0.0).prev_sample
        return x

    def _start(self, seed: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The seeded start vector, drawn on the CPU once per (seed, dim, device, dtype): no host-to-device copy per call."""
        key = (seed, dim, device, dtype)
        if key not in self._starts:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            self._starts[key] = torch.randn(dim, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
        return self._starts[key]

    def sampler(self, steps: int) -> tuple[Any, list[int]]:
        """The DDIM scheduler for ``steps`` reverse steps and its timesteps as Python ints, made once:
        building one costs tens of milliseconds, after ``set_timesteps`` its ``step`` changes no state,
        and a method calls this before training so a step reads no tensor back (``ltbench.sync_check``)."""
        if steps not in self._samplers:
            from diffusers import DDIMScheduler

            clip = {"clip_sample": self.clip_sample is not None, "clip_sample_range": self.clip_sample or 1.0}
            sched = DDIMScheduler.from_config(self.ddpm.config, set_alpha_to_one=True, **clip)
            sched.set_timesteps(steps)
            self._samplers[steps] = (sched, [int(t) for t in sched.timesteps.tolist()])
        return self._samplers[steps]

    def describe(self) -> dict[str, Any]:
        c = self.ddpm.config
        return {
            "num_train_timesteps": c.num_train_timesteps,
            "beta_schedule": c.beta_schedule,
            "beta_range": [c.beta_start, c.beta_end],
            "prediction": self.prediction,
            "timestep_spacing": c.timestep_spacing,
            "sampling_clip": self.clip_sample,
        }


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal step embedding (cos/sin halves), through diffusers' ``get_timestep_embedding``."""
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)


class _Block(nn.Module):
    """Pre-norm residual MLP block with one interaction with the condition tokens."""

    def __init__(self, width: int, interaction: Interaction, heads: int, dropout: float) -> None:
        super().__init__()
        self.interaction = interaction
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Dropout(dropout), nn.Linear(2 * width, width))
        if interaction == "xattn":
            self.attn_norm = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        elif interaction == "gated":
            self.gate = nn.Linear(2 * width, width)
            self.value = nn.Linear(width, width)
        elif interaction == "add":
            self.value = nn.Linear(width, width)
        else:
            raise ValueError(f"interaction={interaction!r}; expected 'add', 'xattn' or 'gated'")

    def interact(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """h (B, W), cond (B, N, W) -> the update added to h."""
        if self.interaction == "xattn":
            q = self.attn_norm(h).unsqueeze(1)
            return self.attn(q, cond, cond, need_weights=False)[0].squeeze(1)
        c = cond.mean(1)
        if self.interaction == "gated":
            return torch.sigmoid(self.gate(torch.cat([h, c], -1))) * self.value(c)
        return self.value(c)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = h + self.interact(h, cond)
        return h + self.mlp(self.norm(h))


class VectorDenoiser(nn.Module):
    """eps_theta(x_k, k, c_1..c_n) over vectors; also returns the interactive (hidden) feature.

    ``arch=mlp``: ``depth`` residual MLP blocks, each interacting with the condition tokens as
    ``interaction`` says. ``arch=transformer``: a ``depth``-layer transformer encoder over the tokens
    [x_k + k; c_1; ...; c_n], whose output at the first token is the hidden feature (``interaction``
    unused: self-attention is the interaction). ``hidden_dim`` reads the hidden feature out to that
    size (the visual feature size, for the centre constraint).
    """

    def __init__(
        self,
        dim: int,
        cond_dims: Sequence[int],
        width: int = 128,
        depth: int = 2,
        arch: Arch = "mlp",
        interaction: Interaction = "add",
        heads: int = 4,
        dropout: float = 0.0,
        hidden_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        if arch not in ("mlp", "transformer"):
            raise ValueError(f"arch={arch!r}; expected 'mlp' or 'transformer'")
        if width % heads:
            raise ValueError(f"width={width} must be a multiple of heads={heads}")
        self.arch, self.width = arch, width
        self.inp = nn.Linear(dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.ModuleList(nn.Linear(d, width) for d in cond_dims)
        if arch == "mlp":
            self.blocks = nn.ModuleList(_Block(width, interaction, heads, dropout) for _ in range(depth))
        else:
            layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, activation="gelu", batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        self.readout = nn.Linear(width, hidden_dim) if hidden_dim else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, conds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction (B, dim), hidden feature (B, hidden_dim or width))."""
        h = self.inp(x) + self.time(timestep_embedding(t, self.width).to(x.dtype))
        tokens = torch.stack([proj(c) for proj, c in zip(self.cond, conds)], 1)
        if self.arch == "mlp":
            for block in self.blocks:
                h = block(h, tokens)
        else:
            h = self.encoder(torch.cat([h.unsqueeze(1), tokens], 1))[:, 0]
        hidden = self.readout(h) if self.readout is not None else h
        return self.out(self.out_norm(h)), hidden


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["NoiseSchedule", "VectorDenoiser", "timestep_embedding", "param_count"]
