"""Every GPU throughput check of issue 14 in one run: writes ``report.md`` and ``report.json`` to ``--out``.

Nothing is downloaded: CIFAR-format pickles and a JPEG tree in the ImageNet-LT list layout are
written as synthetic data (random content, real layout and counts) into a temporary folder. On one
H100/H200 the full run takes about 5 minutes (``--budget-s`` skips what would run past it).

Sections
  cifar    the TDE CIFAR-100-LT config (BBN ResNet-32, batch 256): the plain PyTorch reference
           pipeline (``benchmarks/reference_pipeline.py``: torchvision CIFAR100, PIL transforms,
           DataLoader workers) in fp32 and bf16, against ``ltbench`` fits of the same config:
           device-resident data + bf16 + compiled backbone (the GPU defaults), the same eager, and
           the DataLoader path (device cache off). Images/s, epoch time, 200-epoch projection
           (validation every epoch included, as in the config), host-side data wait vs the rest of
           the step, peak memory, ratio to the reference.
  sync     the device-cached ltbench step under ``torch.cuda.set_sync_debug_mode("error")``.
  jpeg     decode + RandomResizedCrop/flip/jitter of a synthetic ImageNet-shaped JPEG tree through
           the ImageNet-LT data module: ``decode: device`` (nvJPEG) and ``decode: pil`` (workers).
  resnext  the ImageNet-LT TDE config's ResNeXt-50 32x4d train step on a resident batch (256,
           bf16): eager, channels_last, channels_last + ``torch.compile``; images/s, peak memory, MFU.
  cprfl    the COCO-LT CPRFL config's train step (ResNet-101 at 448 px, CLIP RN50 text tower, 80
           classes, batch 16, bf16, random weights) through ``benchmarks/speed.py``, with the text
           tower trainable (as released) and frozen: the figures of CPRFL's card.
  prompts  the CLIP prompt learners' train step on ImageNet base-to-new (ViT-B/16 at 224 px, random
           weights, 500 base classes, MaPLe's batch 4, bf16): CoOp, CoCoOp, MaPLe (depth 9), CDC-like
           with M = 4 CoOp-style templates and with M = 4 MaPLe-style ones.
  tscnet   the ImageNet-LT TSCNet config's stage steps (ViT-B/16 at 224 px, batch 64, bf16) with and
           without each intervention (``benchmarks/tscnet_speed.py``).

``--smoke`` runs every section on CPU with tiny sizes (a minute or two): it checks the script, not
the hardware.

    python benchmarks/gpu_report.py --out gpu_report/        # on the GPU machine
    python benchmarks/gpu_report.py --out /tmp/smoke --smoke # anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CIFAR_CONFIG = str(REPO / "configs" / "tde_cifar100_lt_r100.yaml")
IMAGENET_CONFIG = str(REPO / "configs" / "tde_imagenet_lt.yaml")
CPRFL_CONFIG = str(REPO / "configs" / "cprfl_coco_lt.yaml")


@dataclass
class Sizes:
    device: str
    cifar_per_class: int
    ref_steps: int
    ref_warmup: int
    ref_workers: int
    batch: int
    eval_batch: int
    fit_epochs: int
    loader_fit_epochs: int
    limit_train_batches: Optional[int]
    limit_val_batches: Optional[int]
    sync_steps: int
    resnext_batch: int
    resnext_size: int
    resnext_steps: int
    resnext_warmup: int
    compile_backend: str
    jpeg_classes: int
    jpeg_per_class: int
    jpeg_shapes: tuple[tuple[int, int], ...]
    jpeg_size: int
    jpeg_batch: int
    jpeg_epochs: int
    jpeg_distinct: int
    cprfl_batch: int
    cprfl_size: int
    cprfl_steps: int
    cprfl_warmup: int
    prompt_model: str
    prompt_size: int
    prompt_classes: int
    prompt_batch: int
    prompt_depth: int
    prompt_steps: int
    tscnet_size: int
    tscnet_batch: int
    tscnet_steps: int


def full_sizes() -> Sizes:
    from ltbench.data.synthetic import IMAGENET_SHAPES

    return Sizes(device="cuda", cifar_per_class=500, ref_steps=300, ref_warmup=20, ref_workers=min(12, os.cpu_count() or 1),
                 batch=256, eval_batch=500, fit_epochs=30, loader_fit_epochs=6, limit_train_batches=None, limit_val_batches=None,
                 sync_steps=20, resnext_batch=256, resnext_size=224, resnext_steps=30, resnext_warmup=10, compile_backend="inductor",
                 jpeg_classes=64, jpeg_per_class=48, jpeg_shapes=IMAGENET_SHAPES, jpeg_size=224, jpeg_batch=256, jpeg_epochs=3,
                 jpeg_distinct=384, cprfl_batch=16, cprfl_size=448, cprfl_steps=60, cprfl_warmup=10,
                 prompt_model="ViT-B-16", prompt_size=224, prompt_classes=500, prompt_batch=4, prompt_depth=9, prompt_steps=20,
                 tscnet_size=224, tscnet_batch=64, tscnet_steps=10)


def smoke_sizes() -> Sizes:
    return Sizes(device="cpu", cifar_per_class=100, ref_steps=2, ref_warmup=1, ref_workers=0, batch=16, eval_batch=16,
                 fit_epochs=2, loader_fit_epochs=2, limit_train_batches=2, limit_val_batches=2, sync_steps=2,
                 resnext_batch=2, resnext_size=64, resnext_steps=1, resnext_warmup=1, compile_backend="eager",
                 jpeg_classes=2, jpeg_per_class=6, jpeg_shapes=((60, 80), (80, 60)), jpeg_size=48, jpeg_batch=4, jpeg_epochs=2,
                 jpeg_distinct=8, cprfl_batch=2, cprfl_size=64, cprfl_steps=1, cprfl_warmup=1,
                 prompt_model="ltbench-tiny-clip", prompt_size=16, prompt_classes=6, prompt_batch=2, prompt_depth=2, prompt_steps=1,
                 tscnet_size=32, tscnet_batch=2, tscnet_steps=1)


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"ltbench_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})"


# ---- ltbench fits --------------------------------------------------------------------------------
class StepTimer(L.Callback):
    """Host-side split of each training step: waiting for the next batch (fetch, transfer, device-side
    batching) vs the rest (forward, backward, optimiser; with asynchronous CUDA, also any wait on the
    device queue). Epoch starts give epoch wall times, validation included."""

    def __init__(self) -> None:
        self.wait: list[float] = []
        self.step: list[float] = []
        self.epoch_starts: list[float] = []
        self.end: Optional[float] = None
        self._mark: Optional[float] = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_starts.append(time.perf_counter())
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.wait.append(now - self._mark)
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._mark = time.perf_counter()
        self.step.append(self._mark - self._start)

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.end = time.perf_counter()

    def epoch_times(self) -> list[float]:
        marks = [*self.epoch_starts, self.end or time.perf_counter()]
        return [b - a for a, b in zip(marks, marks[1:])]


def ltbench_fit(root: str, sizes: Sizes, run_dir: str, label: str, device_cache: bool, compiled: bool, epochs: int,
                precision: str = "bf16-mixed", extra_callbacks: tuple = ()) -> dict[str, Any]:
    from ltbench.runner import run
    from ltbench.speedups import Speedups

    device = torch.device(sizes.device)
    workers = 0 if device_cache else sizes.ref_workers
    args = ["--config", CIFAR_CONFIG, "--data.init_args.root", root, "--data.init_args.device_cache", str(device_cache).lower(),
            "--data.init_args.batch_size", str(sizes.batch), "--data.init_args.eval_batch_size", str(sizes.eval_batch),
            "--data.init_args.num_workers", str(workers), "--trainer.max_epochs", str(epochs), "--trainer.precision", precision,
            "--trainer.accelerator", "gpu" if device.type == "cuda" else "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "50",
            "--trainer.num_sanity_val_steps", "0", "--run_dir", run_dir, "--name", label]
    if sizes.limit_train_batches:
        args += ["--trainer.limit_train_batches", str(sizes.limit_train_batches)]
    if sizes.limit_val_batches is not None:  # an int count (jsonargparse reads "1" as 1.0, i.e. all batches)
        args += ["--trainer.limit_val_batches", str(sizes.limit_val_batches)]
    cli = run(args, run=False)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    for cb in trainer.callbacks:
        if isinstance(cb, Speedups):
            cb.channels_last = compiled if device.type == "cuda" else False
            cb.compile = compiled
            cb.compile_backend = sizes.compile_backend
    timer = StepTimer()
    trainer.callbacks.extend([timer, *extra_callbacks])
    _reset_peak(device)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    wall = time.perf_counter() - start
    epochs_run = timer.epoch_times()
    later = epochs_run[1:] or epochs_run
    steps = len(timer.step)
    images = steps * sizes.batch
    n_wait = len(timer.wait)
    return {
        "pipeline": label,
        "device_cache": device_cache,
        "compiled": compiled,
        "precision": precision,
        "batch_size": sizes.batch,
        "epochs": len(epochs_run),
        "steps": steps,
        "train_images": dm.num_train,
        "images_per_s": model.throughput.get("train_images_per_s"),
        "first_epoch_s": epochs_run[0] if epochs_run else None,
        "epoch_s_median": statistics.median(later) if later else None,
        "projected_200_epochs_s": (epochs_run[0] + 199 * statistics.median(later)) if later else None,
        "data_wait_ms_per_step": 1e3 * statistics.median(timer.wait) if n_wait else None,
        "compute_ms_per_step": 1e3 * statistics.median(timer.step) if timer.step else None,
        "peak_mem_mib": _peak_mib(device),
        "mfu_bf16_dense": model.throughput.get("mfu_bf16_dense"),
        "backbone_gflops_per_image": model.throughput.get("backbone_gflops_per_image"),
        "fit_wall_s": wall,
        "images_timed": images,
    }


def section_cifar(sizes: Sizes, tmp: str, rows: dict[str, Any]) -> None:
    ref = _load("reference_pipeline")
    root = os.path.join(tmp, "cifar")
    os.makedirs(root, exist_ok=True)
    from ltbench.data import cifar
    from ltbench.data.synthetic import write_fake_cifar

    cifar.MD5S.update(write_fake_cifar(root, datasets=("cifar100",), cifar100_per_class=sizes.cifar_per_class))
    out = rows.setdefault("cifar", [])
    for precision in ("fp32", "bf16"):
        r = ref.run(root, CIFAR_CONFIG, sizes.ref_steps, sizes.ref_warmup, sizes.batch, sizes.ref_workers, precision, sizes.device)
        out.append(r)
        _write_partial(rows)
    runs = os.path.join(tmp, "runs")
    variants = [
        ("ltbench fit: device cache + compile + channels_last, bf16", True, True, sizes.fit_epochs),
        ("ltbench fit: device cache, eager, bf16", True, False, sizes.fit_epochs),
        ("ltbench fit: DataLoader workers (device cache off), eager, bf16", False, False, sizes.loader_fit_epochs),
    ]
    for label, cache, compiled, epochs in variants:
        out.append(ltbench_fit(root, sizes, runs, label.split(":")[0].replace(" ", "_") + f"_{len(out)}", cache, compiled, epochs))
        out[-1]["pipeline"] = label
        _write_partial(rows)
    ref32 = out[0]["images_per_s"]
    ref16 = out[1]["images_per_s"]
    for r in out:
        r["ratio_to_reference_fp32"] = r["images_per_s"] / ref32 if r.get("images_per_s") and ref32 else None
        r["ratio_to_reference_bf16"] = r["images_per_s"] / ref16 if r.get("images_per_s") and ref16 else None


def section_sync(sizes: Sizes, tmp: str, rows: dict[str, Any]) -> None:
    from ltbench.sync_check import NoSyncInSteps

    root = os.path.join(tmp, "cifar")
    if not os.path.isdir(root):
        raise RuntimeError("needs the cifar section's data")
    check = NoSyncInSteps()
    small = replace(sizes, limit_train_batches=sizes.sync_steps, limit_val_batches=0)
    result: dict[str, Any] = {"check": "torch.cuda.set_sync_debug_mode('error')" if sizes.device == "cuda" else "Tensor host reads raise (CPU)"}
    try:
        ltbench_fit(root, small, os.path.join(tmp, "runs"), "sync_check", True, False, 1, extra_callbacks=(check,))
        result.update(steps_checked=check.steps, host_syncs="none")
    except Exception as e:  # the first sync found, with where it came from
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{f.filename}:{f.lineno} ({f.name})" for f in reversed(tb) if "/ltbench/" in f.filename), None)
        result.update(steps_checked=check.steps, host_syncs=f"{type(e).__name__}: {str(e).splitlines()[0]}", where=where)
    rows["sync"] = [result]


def section_resnext(sizes: Sizes, tmp: str, rows: dict[str, Any]) -> None:
    from ltbench.flops import mfu, train_flops_per_image
    from ltbench.methods.optim import build_optimizer
    from ltbench.speedups import apply_speedups

    speed = _load("speed")
    device = torch.device(sizes.device)
    s, b = sizes.resnext_size, sizes.resnext_batch
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    base, dm = speed.build_synthetic(["--config", IMAGENET_CONFIG], 1000, 3, s)
    torch.use_deterministic_algorithms(False)
    flops = train_flops_per_image(base.backbone, (3, s, s))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 1000, (b,), generator=g).to(device)
    idx = torch.arange(b, device=device)
    out = rows.setdefault("resnext", [])
    for label, channels_last, compiled in (("eager", False, False), ("channels_last", True, False),
                                           ("channels_last + torch.compile", True, True)):
        model = copy.deepcopy(base)
        apply_speedups(model.backbone, channels_last, compiled, None, sizes.compile_backend)
        model.to(device).train()
        opt = build_optimizer(model.named_parameters(), model.optimizer_cfg)

        def step() -> None:
            xb, yb, _ = dm.on_after_batch_transfer((x, y, idx), 0)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model.training_loss(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t0 = time.perf_counter()
        for _ in range(sizes.resnext_warmup):
            step()
        _sync(device)
        warm = time.perf_counter() - t0
        _reset_peak(device)
        t0 = time.perf_counter()
        for _ in range(sizes.resnext_steps):
            step()
        _sync(device)
        dt = time.perf_counter() - t0
        ips = sizes.resnext_steps * b / dt
        out.append({
            "variant": label, "batch_size": b, "input": f"3x{s}x{s}", "precision": "bf16 autocast",
            "images_per_s": ips, "ms_per_step": 1e3 * dt / sizes.resnext_steps, "warmup_s": warm,
            "peak_mem_mib": _peak_mib(device), "backbone_gflops_per_image": flops / 1e9,
            "achieved_tflops": ips * flops / 1e12, "mfu_bf16_dense": mfu(ips, flops, _device_name(device)),
        })
        _write_partial(rows)
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for r in out:
        r["speedup_vs_eager"] = r["images_per_s"] / out[0]["images_per_s"]


def section_jpeg(sizes: Sizes, tmp: str, rows: dict[str, Any]) -> None:
    from ltbench.data.base import auto_workers
    from ltbench.data.jpeg import EncodedImages
    from ltbench.data.lists import ImageNetLT
    from ltbench.data.synthetic import write_fake_image_list

    device = torch.device(sizes.device)
    root = os.path.join(tmp, "imagenet_lt")
    t0 = time.perf_counter()
    write_fake_image_list(root, [sizes.jpeg_per_class] * sizes.jpeg_classes, shapes=sizes.jpeg_shapes, distinct=sizes.jpeg_distinct)
    write_s = time.perf_counter() - t0
    out = rows.setdefault("jpeg", [])
    workers = auto_workers(1) if sizes.device == "cuda" else 0
    for decode in ("device", "pil"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # synthetic lists match no published checksum
            dm = ImageNetLT(root=root, list_dir=root, image_size=sizes.jpeg_size, batch_size=sizes.jpeg_batch, decode=decode,
                            num_workers=workers, drop_last=True)
            dm.setup("fit")
            loader = dm.train_dataloader()
        times, n_img = [], 0
        for epoch in range(sizes.jpeg_epochs):
            loader.sampler.set_epoch(epoch)
            _sync(device)
            t = time.perf_counter()
            n = 0
            for enc, yb, ib in loader:
                if not isinstance(enc, EncodedImages):
                    enc = enc.to(device, non_blocking=True)
                batch = dm.on_after_batch_transfer((enc, yb.to(device, non_blocking=True), ib.to(device, non_blocking=True)), 0)
                n += len(batch[1])
            _sync(device)
            times.append(time.perf_counter() - t)
            if epoch > 0:
                n_img += n
        timed = sum(times[1:]) or times[0]
        out.append({
            "pipeline": f"decode: {decode}" + (" (decode_jpeg on the device, batched augmentation)" if decode == "device" else
                                               " (PIL decode + v2 transforms in workers)"),
            "workers": workers, "cpu_count": os.cpu_count(), "images": len(dm.dataset("train")),
            "image_size": sizes.jpeg_size, "batch_size": sizes.jpeg_batch,
            "images_per_s": (n_img or n) / timed, "first_epoch_s": times[0], "tree_write_s": write_s,
        })
        _write_partial(rows)


def section_cprfl(sizes: Sizes, tmp: str, rows: dict[str, Any]) -> None:
    speed = _load("speed")
    common = ["--config", CPRFL_CONFIG, "--batch-size", str(sizes.cprfl_batch), "--device", sizes.device,
              "--precision", "bf16" if sizes.device == "cuda" else "32", "--steps", str(sizes.cprfl_steps),
              "--warmup", str(sizes.cprfl_warmup), "--synthetic-facts", "--num-classes", "80", "--image-size", str(sizes.cprfl_size),
              "--set", "model.init_args.pretrained=false", "--set", "model.init_args.text_pretrained=null"]
    out = rows.setdefault("cprfl", [])
    for label, frozen in (("text tower trainable (released)", "false"), ("text tower frozen", "true")):
        (row,) = speed.main([*common, "--set", f"model.init_args.freeze_text={frozen}"])
        out.append({"variant": label, **{k: row.get(k) for k in ("params_m", "batch_size", "input", "precision", "ms_per_step",
                                                                   "images_per_s", "peak_mem_mib")}})
        _write_partial(rows)
        if sizes.device == "cuda":
            torch.cuda.empty_cache()


PROMPT_VARIANTS = (  # (label, config, overrides)
    ("CoOp (1 x 4 tokens)", "coop_imagenet_b2n", []),
    ("CoCoOp (1 x 4 tokens + meta-net)", "cocoop_imagenet_b2n", []),
    ("MaPLe (2 tokens x depth {depth})", "maple_imagenet_b2n", ["model.init_args.prompt_depth={depth}"]),
    ("CDC-like, 4 CoOp-style templates", "cdc_imagenet_b2n", []),
    ("CDC-like, 4 MaPLe-style templates (depth {depth})", "cdc_imagenet_b2n",
     ["model.init_args.prompt_style=maple", "model.init_args.n_ctx=2", "model.init_args.prompt_depth={depth}"]),
)


def section_prompts(sizes: Sizes, tmp: str, rows: dict[str, Any]) -> None:
    speed = _load("speed")
    out = rows.setdefault("prompts", [])
    for label, config, extra in PROMPT_VARIANTS:
        sets = [f"model.init_args.clip_model={sizes.prompt_model}", "model.init_args.clip_pretrained=null",
                *(e.format(depth=sizes.prompt_depth) for e in extra)]
        args = ["--config", str(REPO / "configs" / f"{config}.yaml"), "--batch-size", str(sizes.prompt_batch), "--device", sizes.device,
                "--precision", "bf16" if sizes.device == "cuda" else "32", "--steps", str(sizes.prompt_steps), "--warmup", "3",
                "--synthetic-facts", "--num-classes", str(sizes.prompt_classes), "--in-chans", "3", "--image-size", str(sizes.prompt_size)]
        (row,) = speed.main([*args, *(a for kv in sets for a in ("--set", kv))])
        out.append({"variant": label.format(depth=sizes.prompt_depth), "classes": sizes.prompt_classes,
                    **{k: row.get(k) for k in ("batch_size", "input", "precision", "ms_per_step", "images_per_s", "peak_mem_mib")}})
        _write_partial(rows)
        if sizes.device == "cuda":
            torch.cuda.empty_cache()


def section_tscnet(sizes: Sizes, tmp: str, rows: dict[str, Any]) -> None:
    bench = _load("tscnet_speed")
    sets = ["model.init_args.pretrained=false"]
    if sizes.device != "cuda":  # smoke: a tiny ViT instead of ViT-B/16
        sets += ["model.init_args.backbone=vit_tiny_patch16_224",
                 "model.init_args.backbone_kwargs={img_size: 32, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
                 "model.init_args.num_confounders=8", "model.init_args.ccim_dim=16"]
    args = ["--config", str(REPO / "configs" / "tscnet_imagenet_lt.yaml"), "--synthetic-facts", "--num-classes", "1000",
            "--in-chans", "3", "--image-size", str(sizes.tscnet_size), "--batch-size", str(sizes.tscnet_batch), "--device", sizes.device,
            "--precision", "bf16" if sizes.device == "cuda" else "32", "--steps", str(sizes.tscnet_steps), "--warmup", "2"]
    out = rows.setdefault("tscnet", [])
    for row in bench.main([*args, *(a for kv in sets for a in ("--set", kv))]):
        out.append({k: row.get(k) for k in ("variant", "stage", "batch_size", "input", "precision", "trainable_m", "ms_per_step",
                                            "images_per_s", "peak_mem_mib")})
    _write_partial(rows)


SECTIONS: dict[str, Callable[[Sizes, str, dict[str, Any]], None]] = {
    "cifar": section_cifar, "sync": section_sync, "jpeg": section_jpeg, "resnext": section_resnext, "cprfl": section_cprfl,
    "prompts": section_prompts, "tscnet": section_tscnet,
}

_PARTIAL: Optional[Path] = None


def _write_partial(rows: dict[str, Any]) -> None:
    if _PARTIAL is not None:
        _PARTIAL.write_text(json.dumps(rows, indent=2, default=str) + "\n")


# ---- the report ------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) < 1 and v != 0:
            return f"{v:.3f}"
        return f"{v:,.{digits}f}"
    return str(v)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    parts = [
        f"# ltbench GPU throughput report{' (SMOKE: CPU, tiny sizes; not a measurement)' if meta['smoke'] else ''}",
        "",
        f"{meta['device_name']} · {meta['date']} · torch {meta['torch']} · {meta['cpu_count']} CPU cores · "
        f"commit {meta['git']} · total {meta['total_s']:.0f} s",
        "",
        f"Command: `{meta['command']}`",
    ]
    if report.get("cifar"):
        parts += ["", "## CIFAR-100-LT (ρ = 100), TDE config, BBN ResNet-32, synthetic CIFAR-format data", "",
                  _table(report["cifar"], [("pipeline", "pipeline"), ("images_per_s", "images/s"),
                                           ("ratio_to_reference_fp32", "× reference fp32"), ("ratio_to_reference_bf16", "× reference bf16"),
                                           ("epoch_s_median", "s/epoch (with val)"), ("projected_200_epochs_s", "200 epochs (s, projected)"),
                                           ("data_wait_ms_per_step", "data wait ms/step"), ("compute_ms_per_step", "compute ms/step"),
                                           ("peak_mem_mib", "peak MiB"),
                                           ("mfu_bf16_dense", "MFU")]),
                  "", "ltbench images/s are the run's own measure (training epochs after the first); the reference's are "
                  "over its timed steps. Data wait / compute: host time per step waiting for the batch vs the rest of the step "
                  "(asynchronous CUDA: device time shows up wherever the host blocks)."]
    if report.get("sync"):
        parts += ["", "## Host syncs inside a training step", "", _table(report["sync"], [("check", "check"), ("steps_checked", "steps"),
                                                                                      ("host_syncs", "syncs found"), ("where", "where")])]
    if report.get("resnext"):
        parts += ["", "## ImageNet-LT TDE config: ResNeXt-50 32x4d train step, resident batch", "",
                  _table(report["resnext"], [("variant", "variant"), ("batch_size", "batch"), ("input", "input"), ("images_per_s", "images/s"),
                                             ("speedup_vs_eager", "× eager"), ("ms_per_step", "ms/step"), ("peak_mem_mib", "peak MiB"),
                                             ("achieved_tflops", "TFLOP/s"), ("mfu_bf16_dense", "MFU (bf16 dense peak)"),
                                             ("warmup_s", "warm-up s")])]
    if report.get("jpeg"):
        parts += ["", "## JPEG decode + augmentation, synthetic ImageNet-shaped tree (ImageNet-LT list layout)", "",
                  _table(report["jpeg"], [("pipeline", "pipeline"), ("images_per_s", "images/s"), ("workers", "workers"),
                                          ("cpu_count", "cores"), ("images", "images"), ("image_size", "crop"), ("first_epoch_s", "first epoch s")])]
    if report.get("cprfl"):
        parts += ["", "## COCO-LT CPRFL config: train step on synthetic images (random weights)", "",
                  _table(report["cprfl"], [("variant", "variant"), ("params_m", "params (M)"), ("batch_size", "batch"), ("input", "input"),
                                           ("precision", "precision"), ("ms_per_step", "ms/step"), ("images_per_s", "images/s"),
                                           ("peak_mem_mib", "peak MiB")])]
    if report.get("prompts"):
        parts += ["", "## CLIP prompt learners: train step, ImageNet base-to-new (random weights, resident batch)", "",
                  _table(report["prompts"], [("variant", "variant"), ("classes", "classes"), ("batch_size", "batch"), ("input", "input"),
                                             ("precision", "precision"), ("ms_per_step", "ms/step"), ("images_per_s", "images/s"),
                                             ("peak_mem_mib", "peak MiB")])]
    if report.get("tscnet"):
        parts += ["", "## TSCNet, ImageNet-LT config: stage steps with and without each intervention", "",
                  _table(report["tscnet"], [("variant", "variant"), ("stage", "stage"), ("batch_size", "batch"), ("input", "input"),
                                            ("precision", "precision"), ("trainable_m", "trainable (M)"), ("ms_per_step", "ms/step"),
                                            ("images_per_s", "images/s"), ("peak_mem_mib", "peak MiB")])]
    if report.get("errors"):
        parts += ["", "## Sections that failed or were skipped", ""] + [f"- {k}: {v}" for k, v in report["errors"].items()]
    return "\n".join(parts) + "\n"


def _git() -> Optional[str]:
    try:
        from ltbench.records import git_commit

        commit = git_commit()
        if isinstance(commit, dict):
            return f"{str(commit.get('commit'))[:12]}{' (dirty)' if commit.get('dirty') else ''}"
        return str(commit)
    except Exception:
        return None


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    global _PARTIAL
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for report.md and report.json")
    p.add_argument("--smoke", action="store_true", help="every section on CPU with tiny sizes (checks the script)")
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--budget-s", type=float, default=450.0, help="skip sections that would start after this many seconds")
    args = p.parse_args(argv)
    sizes = smoke_sizes() if args.smoke else full_sizes()
    if sizes.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device: run on the GPU machine, or pass --smoke")
    args.out.mkdir(parents=True, exist_ok=True)
    _PARTIAL = args.out / "report.partial.json"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    if sizes.device == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    rows: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sections:
            elapsed = time.perf_counter() - start
            if elapsed > args.budget_s:
                errors[name] = f"skipped: {elapsed:.0f} s elapsed, over --budget-s {args.budget_s:.0f}"
                continue
            t0 = time.perf_counter()
            try:
                SECTIONS[name](sizes, tmp, rows)
            except Exception as e:  # one failing section must not lose the others
                traceback.print_exc()
                errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"gpu_report: section {name} took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    device = torch.device(sizes.device)
    report = {
        "meta": {
            "smoke": args.smoke, "device_name": _device_name(device), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "git": _git(), "total_s": time.perf_counter() - start,
            "command": "python benchmarks/gpu_report.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "sizes": asdict(sizes),
        },
        **rows,
        "errors": errors,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    with contextlib.suppress(FileNotFoundError):
        _PARTIAL.unlink()
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
