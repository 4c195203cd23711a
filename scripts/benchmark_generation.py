#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Generation benchmark: Meta-GAN pipeline vs. a diffusers DDPM/DDIM pipeline of comparable size, on this machine.

Measures, in one run:

1. images/s of `MetaGANPipeline` (`output_type="pt"`, batch 256 by default, median of timed repeats after a warm-up)
   for the default 32×32 and 64×64 generators, with fp32 and bf16 weights: as loaded ("default": CPU inference
   already runs channels_last feature maps and fuses upsampling for chunks of >= 32 images) / `channels_last` weights
   without fusing / `channels_last` + fused upsampling / the same + `torch.compile` (`enable_fast_generation`);
2. images/s of a diffusers `DDPMPipeline` whose `UNet2DModel` has a comparable parameter count (within ±30% of the
   32×32 generator's; of the candidates in that range, the one with the fewest FLOPs per step, the choice most
   favourable to the baseline), with a 50-step `DDIMScheduler` (fp32 eager, and bf16 autocast + `channels_last` for a
   fast-options-on-both-sides ratio) and a 1000-step `DDPMScheduler` (extrapolated from a measured number of steps,
   said so in the table);
3. FLOPs per image (`torch.utils.flop_counter.FlopCounterMode`), achieved FLOP/s and the fraction of this machine's
   measured fp32 (and bf16) `torch.mm` peak;
4. the time to `import metagan_hub` and load a saved 32×32 pipeline from a folder in a fresh process, minus a fresh
   process's `import diffusers` time.

Example:

    python scripts/benchmark_generation.py --quick     # about 1-2 minutes on 2 cores
    python scripts/benchmark_generation.py             # full run, a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import diffusers
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

import metagan_hub
from metagan_hub import MetaGANGenerator, MetaGANPipeline
from metagan_hub.models.generator_metagan import FUSED_UPSAMPLING_MIN_BATCH

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_utils import cpu_name, run_fresh_process  # noqa: E402

# images per generator forward when the pipeline is called without `chunk_size`
DEFAULT_CHUNK_SIZE = inspect.signature(MetaGANPipeline.__call__).parameters["chunk_size"].default

# (block_out_channels, layers_per_block) of plain-conv UNets. Of those within ±30% of the generator's parameter count,
# the one with the fewest FLOPs per denoising step is used: the choice most favourable to the diffusion baseline.
UNET_CANDIDATES = (
    ((16, 32, 32, 64), 1),
    ((16, 32, 64), 1),
    ((16, 32, 64, 64), 1),
    ((16, 32, 64), 2),
    ((32, 32, 64), 1),
    ((32, 64), 1),
    ((32, 64, 64), 1),
    ((16, 32, 64, 96), 1),
    ((32, 64, 128), 1),
    ((16, 32, 64, 128), 1),
    ((32, 64, 128, 128), 1),
    ((64, 128, 256), 1),
    ((64, 128, 256, 256), 1),
)
UNET_PARAM_TOLERANCE = 0.3
UNET_SAMPLE_SIZE = 32  # the diffusion baseline's resolution (the 32x32 generator's)
UNET_NORM_GROUPS = 8  # GroupNorm groups of every UNet block: its channel counts must be multiples of it
IMPORT_TARGET_S = 3.0
SPEEDUP_TARGET = 100.0
PEAK_FRACTION_TARGET = 0.30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark Meta-GAN generation against a DDPM/DDIM pipeline.")
    parser.add_argument("--quick", action="store_true", help="A short run (about 1-2 minutes on 2 cores).")
    parser.add_argument("--batch_size", type=int, default=256, help="Images per Meta-GAN pipeline call.")
    parser.add_argument(
        "--repeats", type=int, default=None, help="Timed Meta-GAN calls per option (median); 5, or 2 with --quick."
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: all CPUs, os.cpu_count())."
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64], help="Generator sample sizes.")
    parser.add_argument("--out_channels", type=int, default=1, choices=(1, 3), help="Image channels (both models).")
    parser.add_argument(
        "--diffusion_batch_size",
        type=int,
        default=64,
        help="Images per diffusion pipeline call (on CPU a batch of 64 gives more images/s than 256, so this favours "
        "the diffusion baseline; smaller batches suffer most when other processes compete for the cores).",
    )
    parser.add_argument(
        "--ddpm_measured_steps",
        type=int,
        default=None,
        help="DDPM steps actually run; the 1000-step time is extrapolated from them (default 50, or 10 with --quick).",
    )
    parser.add_argument(
        "--unet_block_out_channels",
        type=int,
        nargs="+",
        default=None,
        help="Override the UNet2DModel's block_out_channels (default: chosen automatically, see the model list).",
    )
    parser.add_argument(
        "--unet_layers_per_block", type=int, default=None, help="With --unet_block_out_channels (default 1)."
    )
    parser.add_argument("--no_compile", action="store_true", help="Skip the torch.compile options.")
    parser.add_argument("--no_import_time", action="store_true", help="Skip the import/load time measurement.")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    args.warmup = 1 if args.quick else 2
    if args.threads is None:
        args.threads = os.cpu_count() or 1
    if args.ddpm_measured_steps is None:
        args.ddpm_measured_steps = 10 if args.quick else 50
    for name in ("batch_size", "repeats", "threads", "diffusion_batch_size", "ddpm_measured_steps"):
        value = getattr(args, name)
        if value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}.")
    for size in args.resolutions:
        if size not in (16, 32, 64, 128):
            parser.error(f"--resolutions must be among 16, 32, 64, 128, got {size}.")
    # the UNet is built after the whole Meta-GAN section: its options are checked now
    channels = args.unet_block_out_channels
    if args.unet_layers_per_block is not None and args.unet_layers_per_block < 1:
        parser.error(f"--unet_layers_per_block must be a positive integer, got {args.unet_layers_per_block}.")
    if channels is None:
        if args.unet_layers_per_block is not None:
            parser.error(
                f"--unet_layers_per_block {args.unet_layers_per_block} sets the UNet given by "
                "--unet_block_out_channels (the automatic choice has its own): give --unet_block_out_channels too."
            )
    else:
        if any(c < 1 or c % UNET_NORM_GROUPS for c in channels):
            parser.error(
                f"--unet_block_out_channels must be positive multiples of {UNET_NORM_GROUPS} (the UNet's GroupNorm "
                f"groups), got {' '.join(map(str, channels))}."
            )
        levels = UNET_SAMPLE_SIZE.bit_length()  # 32x32 halves down to 1x1: at most 6 blocks
        if len(channels) > levels:
            parser.error(
                f"--unet_block_out_channels gives {len(channels)} blocks, but the {UNET_SAMPLE_SIZE}x"
                f"{UNET_SAMPLE_SIZE} UNet halves its size after each block but the last: at most {levels}, got "
                f"{' '.join(map(str, channels))}."
            )
        if args.unet_layers_per_block is None:
            args.unet_layers_per_block = 1
    return args


# ---------------------------------------------------------------------------------------------------- helpers


def load_average() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def busy_warning() -> str | None:
    """A warning when other processes already keep the CPUs busy (1-minute load average)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cpus = os.cpu_count() or 1
    if load < 0.5 * cpus:
        return None
    return (
        f"WARNING: load average {load:.2f} on {cpus} CPUs before this benchmark started: other processes compete "
        "for the cores. With more runnable threads than cores, OpenMP barriers stall, and models made of many small "
        "ops (the UNet at batch 64) slow down far more than the generator's few large convolutions, which inflates "
        "the Meta-GAN / diffusion ratios. Rerun on an idle machine, or with --threads 1 to limit oversubscription."
    )


def short_error(exc: BaseException, limit: int = 110) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    message = message.replace("|", "/")
    return message if len(message) <= limit else message[: limit - 3] + "..."


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def fmt_rate(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...], repeats: int) -> tuple[float, int]:
    """Best FLOP/s of square `torch.mm` over `sizes` and `repeats`; returns (FLOP/s, size that reached it)."""
    best, best_n = 0.0, sizes[0]
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            rate = 2 * n**3 / (time.perf_counter() - start)
            if rate > best:
                best, best_n = rate, n
    return best, best_n


class PeakTracker:
    """Best `torch.mm` FLOP/s per dtype over several measurement rounds spread through the run (other processes
    on the machine make any single round an underestimate)."""

    def __init__(self):
        self.best: dict[torch.dtype, float] = {}
        self.size: dict[torch.dtype, int] = {}
        self.rounds: dict[torch.dtype, list[float]] = {}

    def update(self, *dtypes: torch.dtype, sizes: tuple[int, ...] = (2048,), repeats: int = 2) -> None:
        for dtype in dtypes:
            rate, n = matmul_peak(dtype, sizes, repeats)
            self.rounds.setdefault(dtype, []).append(rate)
            if rate > self.best.get(dtype, 0.0):
                self.best[dtype], self.size[dtype] = rate, n


# ---------------------------------------------------------------------------------------------------- Meta-GAN
@dataclass
class GenResult:
    resolution: int
    option: str
    dtype: torch.dtype
    images_per_s: float | None = None
    batch_times: list[float] = field(default_factory=list)
    first_call_s: float | None = None
    error: str | None = None
    fused: bool = False


GEN_OPTIONS = (
    # label, dtype, channels_last weights, fused upsampling (None: the auto default), compile
    # "default" is a new pipeline as loaded: its CPU inference already runs channels_last feature maps and fuses the
    # upsampling of chunks of >= 32 images; "channels_last" switches fusing off to show what fusing adds
    ("fp32 default", torch.float32, False, None, False),
    ("fp32 channels_last", torch.float32, True, False, False),
    ("fp32 channels_last + fused", torch.float32, True, True, False),
    ("fp32 channels_last + fused + compile", torch.float32, True, True, True),
    ("bf16 default", torch.bfloat16, False, None, False),
    ("bf16 channels_last", torch.bfloat16, True, False, False),
    ("bf16 channels_last + fused", torch.bfloat16, True, True, False),
    ("bf16 channels_last + fused + compile", torch.bfloat16, True, True, True),
)


def make_metagan_pipeline(sample_size: int, out_channels: int) -> MetaGANPipeline:
    torch.manual_seed(0)
    generator = MetaGANGenerator(sample_size=sample_size, out_channels=out_channels).eval()
    pipe = MetaGANPipeline(generator=generator, discriminator=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_metagan_option(
    sample_size: int, out_channels: int, option: tuple, batch_size: int, repeats: int, warmup: int
) -> GenResult:
    label, dtype, channels_last, fused, compile_ = option
    # the auto default fuses the pipeline's (CPU) chunks of >= FUSED_UPSAMPLING_MIN_BATCH images
    auto_fuses = min(batch_size, DEFAULT_CHUNK_SIZE) >= FUSED_UPSAMPLING_MIN_BATCH
    result = GenResult(sample_size, label, dtype, fused=bool(fused) or (fused is None and auto_fuses))
    try:
        pipe = make_metagan_pipeline(sample_size, out_channels)
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        if compile_:
            torch._dynamo.reset()
        if channels_last or fused is not None or compile_:
            pipe.enable_fast_generation(channels_last=channels_last, fused_upsampling=fused, compile=compile_)

        def call(seed: int) -> torch.Tensor:
            return pipe(batch_size=batch_size, generator=torch.Generator().manual_seed(seed), output_type="pt").images

        start = time.perf_counter()
        images = call(0)  # warm-up (compiles when compile_ is set)
        result.first_call_s = time.perf_counter() - start
        expected = (batch_size, out_channels, sample_size, sample_size)
        if tuple(images.shape) != expected or not torch.isfinite(images).all():
            raise RuntimeError(f"unexpected output: shape {tuple(images.shape)}, expected {expected}")
        for i in range(1, warmup):  # further warm-up: allocator, caches
            call(i)
        for i in range(repeats):
            start = time.perf_counter()
            call(warmup + i)
            result.batch_times.append(time.perf_counter() - start)
        result.images_per_s = batch_size / statistics.median(result.batch_times)
    except Exception as exc:  # report, do not crash (e.g. torch.compile without a working C++ toolchain)
        result.error = short_error(exc)
    return result


# ---------------------------------------------------------------------------------------------------- diffusion
def unet_config(sample_size: int, channels: int, block_out_channels: tuple[int, ...], layers_per_block: int) -> dict:
    return {
        "sample_size": sample_size,
        "in_channels": channels,
        "out_channels": channels,
        "block_out_channels": tuple(block_out_channels),
        "layers_per_block": layers_per_block,
        "down_block_types": ("DownBlock2D",) * len(block_out_channels),
        "up_block_types": ("UpBlock2D",) * len(block_out_channels),
        "norm_num_groups": UNET_NORM_GROUPS,
    }


def unet_flops_per_step(unet: UNet2DModel, batch: int = 2) -> float:
    c, s = unet.config.in_channels, unet.config.sample_size
    sample, timestep = torch.randn(batch, c, s, s), torch.full((batch,), 500)
    return count_flops(lambda: unet(sample, timestep)) / batch


def make_unet(
    sample_size: int, channels: int, target_params: int, args: argparse.Namespace
) -> tuple[UNet2DModel, dict]:
    """The UNet to compare with: the override from the command line, else the candidate within ±30% of
    `target_params` with the fewest FLOPs per step (else the one closest in parameter count)."""
    if args.unet_block_out_channels:
        candidates = [(tuple(args.unet_block_out_channels), args.unet_layers_per_block)]
    else:
        candidates = UNET_CANDIDATES
    scored = []
    for block_out_channels, layers_per_block in candidates:
        config = unet_config(sample_size, channels, block_out_channels, layers_per_block)
        torch.manual_seed(0)
        unet = UNet2DModel(**config).eval()
        gap = abs(num_params(unet) / target_params - 1)
        flops = unet_flops_per_step(unet) if gap <= UNET_PARAM_TOLERANCE else float("inf")
        scored.append((flops, gap, unet, config))
    _, _, unet, config = min(scored, key=lambda x: (x[0], x[1]))
    return unet, config


@dataclass
class DiffResult:
    label: str
    steps: int
    batch_size: int
    images_per_s: float | None = None
    per_step_s: float | None = None
    note: str = ""
    error: str | None = None
    option: str = "fp32 eager"


def bench_diffusion(
    unet: UNet2DModel, args: argparse.Namespace, paired_call: Callable[[], float] | None = None
) -> tuple[list[DiffResult], list[float]]:
    """Time DDIM-50 (measured) and DDPM-1000 (extrapolated). `paired_call` times one Meta-GAN batch: it is called
    before each DDIM run and after the last one, so that both sides of the headline ratio see the same load."""
    batch = args.diffusion_batch_size
    results = []
    paired_times: list[float] = []

    def time_ddim(target_unet: UNet2DModel, option: str, runs: int, context, paired: bool) -> DiffResult:
        """Time full 50-step DDIM runs (after a 2-step warm-up) inside `context`; with `paired`, one Meta-GAN batch
        is timed before each run and after the last one."""
        ddim = DDPMPipeline(unet=target_unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
        ddim.set_progress_bar_config(disable=True)
        res = DiffResult("DDIM 50 steps", 50, batch, option=option)
        try:
            with context:
                ddim(batch_size=batch, num_inference_steps=2, output_type="np")  # warm-up
                times = []
                for i in range(runs):
                    if paired:
                        paired_times.append(paired_call())
                    start = time.perf_counter()
                    ddim(
                        batch_size=batch,
                        num_inference_steps=50,
                        output_type="np",
                        generator=torch.Generator().manual_seed(i),
                    )
                    times.append(time.perf_counter() - start)
                if paired:
                    paired_times.append(paired_call())
            res.images_per_s = batch / statistics.median(times)
            res.per_step_s = statistics.median(times) / 50
            res.note = f"measured: median of {len(times)} full 50-step runs"
        except Exception as exc:
            res.error = short_error(exc)
        return res

    # DDIM, 50 steps, measured in full
    results.append(
        time_ddim(unet, "fp32 eager", 2 if args.quick else 3, contextlib.nullcontext(), paired_call is not None)
    )
    # DDIM, 50 steps, with the fast options a diffusers user has without compiling: bf16 autocast + channels_last
    # (autocast rather than bf16 weights: DDPMPipeline's numpy conversion of the output does not take bf16)
    fast_unet = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    results.append(time_ddim(fast_unet, "bf16 autocast channels_last", 1 if args.quick else 2, autocast, False))

    # DDPM, 1000 steps: run `ddpm_measured_steps` steps and extrapolate the per-step time
    k = min(args.ddpm_measured_steps, 1000)
    ddpm = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    ddpm.set_progress_bar_config(disable=True)
    res = DiffResult("DDPM 1000 steps", 1000, batch)
    try:
        ddpm(batch_size=batch, num_inference_steps=2, output_type="np")  # warm-up
        start = time.perf_counter()
        ddpm(batch_size=batch, num_inference_steps=k, output_type="np", generator=torch.Generator().manual_seed(0))
        per_step = (time.perf_counter() - start) / k
        res.per_step_s = per_step
        res.images_per_s = batch / (per_step * 1000)
        res.note = (
            f"EXTRAPOLATED: timed {k} DDPM steps (same UNet forward + scheduler step per step), "
            f"{per_step * 1000:.0f} ms/step x 1000"
            if k < 1000
            else "measured: one full 1000-step run"
        )
    except Exception as exc:
        res.error = short_error(exc)
    results.append(res)
    return results, paired_times


# ---------------------------------------------------------------------------------------------------- import time
IMPORT_DIFFUSERS = "import time\nt = time.perf_counter()\nimport diffusers\nprint(time.perf_counter() - t)\n"
IMPORT_DIFFUSION_PIPELINE = (
    "import time\nt = time.perf_counter()\nfrom diffusers import DiffusionPipeline\nprint(time.perf_counter() - t)\n"
)
IMPORT_AND_LOAD = (
    "import sys, time\nt = time.perf_counter()\nimport metagan_hub\n"
    "pipe = metagan_hub.MetaGANPipeline.from_pretrained(sys.argv[1])\nprint(time.perf_counter() - t)\n"
)


def time_subprocess(code: str, *argv: str) -> tuple[float, float]:
    """Run `code` in a fresh interpreter; returns (seconds it printed, wall seconds of the whole process)."""
    env = dict(os.environ, DIFFUSERS_VERBOSITY="error", TQDM_DISABLE="1")
    child = run_fresh_process([sys.executable, "-c", code, *argv], "the import timing", env=env, timeout=300)
    return float(child.last_line()), child.wall_s


def bench_import(out_channels: int, repeats: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as folder:
        make_metagan_pipeline(32, out_channels).save_pretrained(folder)
        samples: dict[str, list[tuple[float, float]]] = {"diffusers": [], "pipeline": [], "metagan": []}
        for _ in range(repeats):  # interleaved so that load drifts affect all three alike
            samples["diffusers"].append(time_subprocess(IMPORT_DIFFUSERS))
            samples["pipeline"].append(time_subprocess(IMPORT_DIFFUSION_PIPELINE))
            samples["metagan"].append(time_subprocess(IMPORT_AND_LOAD, folder))
    return {
        key: (statistics.median(s[0] for s in vals), statistics.median(s[1] for s in vals))
        for key, vals in samples.items()
    }


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    diffusers.utils.logging.set_verbosity_error()  # e.g. ModelMixin.to(dtype) warns even with nothing to keep fp32
    run_start = time.perf_counter()

    print("# Meta-GAN generation benchmark")
    print()
    print(f"- torch {torch.__version__}, diffusers {diffusers.__version__}, metagan_hub {metagan_hub.__version__}")
    print(f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    print(f"- CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, ISA: {torch.backends.cpu.get_cpu_capability()}")
    print(f"- torch threads: {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op")
    print(
        f"- mode: {'quick' if args.quick else 'full'}; Meta-GAN batch {args.batch_size}, median of {args.repeats} "
        f"timed calls after {args.warmup} warm-up call(s); out_channels {args.out_channels}"
    )
    print(f"- load average at start (1/5/15 min): {load_average()}")
    warning = busy_warning()
    if warning:
        print(f"- {warning}")
    print()

    # 1. import + load time, in fresh processes (done first, while no compile workers or big tensors are around)
    import_times = None
    if not args.no_import_time:
        try:
            import_times = bench_import(args.out_channels, 1 if args.quick else 3)
        except Exception as exc:
            print(f"Import time measurement failed: {short_error(exc, 400)}\n")

    # 2. machine peak
    peaks = PeakTracker()
    sizes = (2048,) if args.quick else (2048, 4096)
    peaks.update(torch.float32, torch.bfloat16, sizes=sizes, repeats=3 if args.quick else 5)

    # 3. Meta-GAN pipelines
    gen_info = {}
    gen_results: list[GenResult] = []
    options = [o for o in GEN_OPTIONS if not (args.no_compile and o[4])]
    for size in args.resolutions:
        pipe = make_metagan_pipeline(size, args.out_channels)
        latents = torch.randn(args.batch_size, pipe.generator.config.latent_dim)
        pipe.generator.enable_fused_upsampling(False)
        flops = count_flops(lambda pipe=pipe, latents=latents: pipe.generator(latents))
        pipe.generator.enable_fused_upsampling(True)
        flops_fused = count_flops(lambda pipe=pipe, latents=latents: pipe.generator(latents))
        gen_info[size] = {
            "params": num_params(pipe.generator),
            "flops_per_image": flops / args.batch_size,
            "flops_per_image_fused": flops_fused / args.batch_size,
            "block_out_channels": tuple(pipe.generator.config.block_out_channels),
        }
        del pipe
        for option in options:
            gen_results.append(
                bench_metagan_option(size, args.out_channels, option, args.batch_size, args.repeats, args.warmup)
            )
        peaks.update(torch.float32, torch.bfloat16)  # re-measured between groups: load from other processes varies

    # 4. diffusion baseline at 32x32 with a UNet of comparable size
    ref_size = UNET_SAMPLE_SIZE
    ref_params = num_params(MetaGANGenerator(sample_size=ref_size, out_channels=args.out_channels))
    unet, unet_cfg = make_unet(ref_size, args.out_channels, ref_params, args)
    unet_params = num_params(unet)
    unet_flops = unet_flops_per_step(unet)
    # the Meta-GAN side of the headline ratio (fp32 default) is re-timed between the DDIM runs, so that both sides see
    # about the same load from other processes
    paired_pipe = make_metagan_pipeline(ref_size, args.out_channels)
    paired_pipe(batch_size=args.batch_size, output_type="pt")  # warm-up

    def paired_call() -> float:
        start = time.perf_counter()
        paired_pipe(batch_size=args.batch_size, output_type="pt")
        return time.perf_counter() - start

    diff_results, paired_times = bench_diffusion(unet, args, paired_call)
    peaks.update(torch.float32, torch.bfloat16)
    peak_fp32 = peaks.best[torch.float32]

    def flops_per_image(r: GenResult) -> float:
        """FLOPs the option actually runs (fused upsampling does fewer for the same images)."""
        return gen_info[r.resolution]["flops_per_image_fused" if r.fused else "flops_per_image"]

    # ------------------------------------------------------------------------------------------------ report
    print("## Machine peak (square torch.mm, best of all measurements during the run)")
    print()
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        print(
            f"- {name}: {peaks.best[dtype] / 1e9:,.1f} GFLOP/s (n={peaks.size[dtype]}); "
            f"per measurement round: {', '.join(f'{r / 1e9:.0f}' for r in peaks.rounds[dtype])} GFLOP/s"
        )
    print()

    print("## Models")
    print()
    for size, info in gen_info.items():
        print(
            f"- MetaGANGenerator {size}x{size}: block_out_channels={list(info['block_out_channels'])}, "
            f"{info['params']:,} parameters, {info['flops_per_image'] / 1e6:,.1f} MFLOP/image "
            f"({info['flops_per_image_fused'] / 1e6:,.1f} with fused upsampling) "
            "(FlopCounterMode: conv + linear; GroupNorm, activations, upsampling not counted)"
        )
    print(
        f"- UNet2DModel {ref_size}x{ref_size}: block_out_channels={list(unet_cfg['block_out_channels'])}, "
        f"layers_per_block={unet_cfg['layers_per_block']}, DownBlock2D/UpBlock2D (no attention; "
        f"{'as given' if args.unet_block_out_channels else 'fewest FLOPs among candidates within ±30% params'}), "
        f"{unet_params:,} parameters = {unet_params / ref_params:.2f}x the {ref_size}x{ref_size} generator's "
        f"{ref_params:,}; {unet_flops / 1e6:,.1f} MFLOP/image per denoising step"
    )
    if abs(unet_params / ref_params - 1) > 0.3:
        print("  WARNING: parameter counts differ by more than 30%.")
    print()

    print("## Images/s")
    print()
    header = (
        "| model | resolution | option | batch | images/s | median s/batch | GFLOP/s | % fp32 mm peak "
        "| % same-dtype mm peak | first call s |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for r in gen_results:
        if r.error is not None:
            print(
                f"| MetaGANPipeline | {r.resolution}x{r.resolution} | {r.option} | {args.batch_size} "
                f"| failed: {r.error} | | | | | |"
            )
            continue
        rate = r.images_per_s * flops_per_image(r)
        print(
            f"| MetaGANPipeline | {r.resolution}x{r.resolution} | {r.option} | {args.batch_size} "
            f"| {fmt_rate(r.images_per_s)} | {statistics.median(r.batch_times):.3f} | {rate / 1e9:,.1f} "
            f"| {100 * rate / peak_fp32:.1f}% | {100 * rate / peaks.best[r.dtype]:.1f}% | {r.first_call_s:.1f} |"
        )
    for d in diff_results:
        name = f"DDPMPipeline + {d.label}"
        if d.error is not None:
            print(f"| {name} | {ref_size}x{ref_size} | {d.option} | {d.batch_size} | failed: {d.error} | | | | | |")
            continue
        rate = d.images_per_s * unet_flops * d.steps
        print(
            f"| {name} | {ref_size}x{ref_size} | {d.option}; {d.note} | {d.batch_size} | {fmt_rate(d.images_per_s)} "
            f"| {d.batch_size / d.images_per_s:.1f} | {rate / 1e9:,.1f} | {100 * rate / peak_fp32:.1f}% "
            f"| {100 * rate / peaks.best[torch.bfloat16 if d.option.startswith('bf16') else torch.float32]:.1f}% | |"
        )
    print()

    # ------------------------------------------------------------------------------------------------ targets
    print("## Ratios and targets")
    print()
    by_key = {(r.resolution, r.option): r for r in gen_results if r.error is None}
    ddim = diff_results[0] if diff_results[0].error is None else None
    ddim_fast = diff_results[1] if diff_results[1].error is None else None
    ddpm = diff_results[2] if diff_results[2].error is None else None
    ref_eager = by_key.get((ref_size, "fp32 default"))
    if paired_times:
        ref_eager = GenResult(ref_size, "fp32 default (paired)", torch.float32, batch_times=paired_times)
        ref_eager.images_per_s = args.batch_size / statistics.median(paired_times)
    ref_best = max(
        (r for r in gen_results if r.error is None and r.resolution == ref_size),
        key=lambda r: r.images_per_s,
        default=None,
    )
    if ddim is not None and ref_eager is not None:
        ratio = ref_eager.images_per_s / ddim.images_per_s
        verdict = "MET" if ratio >= SPEEDUP_TARGET else "MISSED"
        print(
            f"- MetaGAN {ref_size}x{ref_size} fp32 default / DDIM-50 fp32 eager: {ratio:,.0f}x "
            f"(target >= {SPEEDUP_TARGET:.0f}x: {verdict}; both pipelines as loaded, no options switched on; MetaGAN "
            f"re-timed between the DDIM runs: {fmt_rate(ref_eager.images_per_s)} images/s, median of "
            f"{len(ref_eager.batch_times)} calls)"
        )
        if ref_best is not None:
            print(
                f"- MetaGAN {ref_size}x{ref_size} fastest option ({ref_best.option}) / DDIM-50 fp32 eager: "
                f"{ref_best.images_per_s / ddim.images_per_s:,.0f}x"
            )
        if ref_best is not None and ddim_fast is not None:
            print(
                f"- MetaGAN {ref_size}x{ref_size} fastest option ({ref_best.option}) / DDIM-50 bf16 autocast "
                f"channels_last: {ref_best.images_per_s / ddim_fast.images_per_s:,.0f}x (fast options on both sides)"
            )
        if ddpm is not None:
            print(
                f"- MetaGAN {ref_size}x{ref_size} fp32 default / DDPM-1000 (extrapolated): "
                f"{ref_eager.images_per_s / ddpm.images_per_s:,.0f}x"
            )
    else:
        print("- speed-up vs DDIM-50: not available (a measurement failed)")
    for size in args.resolutions:
        rows = [r for r in gen_results if r.error is None and r.resolution == size]
        if not rows:
            continue
        fastest = max(rows, key=lambda r: r.images_per_s)
        fp32_rows = [r for r in rows if r.dtype == torch.float32]
        line = (
            f"- {size}x{size} fastest option: {fastest.option}, {fmt_rate(fastest.images_per_s)} images/s = "
            f"{100 * fastest.images_per_s * flops_per_image(fastest) / peak_fp32:.1f}% of fp32 mm peak "
            f"({100 * fastest.images_per_s * flops_per_image(fastest) / peaks.best[fastest.dtype]:.1f}% of its own "
            "dtype's peak)"
        )
        if fp32_rows:
            best32 = max(fp32_rows, key=lambda r: r.images_per_s)
            line += (
                f"; best fp32 option: {best32.option}, "
                f"{100 * best32.images_per_s * flops_per_image(best32) / peak_fp32:.1f}%"
            )
        print(line)
    if by_key:
        fractions = [(r.images_per_s * flops_per_image(r) / peak_fp32, r) for r in gen_results if r.error is None]
        best_fraction, best_row = max(fractions, key=lambda x: x[0])
        verdict = "MET" if best_fraction >= PEAK_FRACTION_TARGET else "MISSED"
        print(
            f"- best fraction of fp32 mm peak: {100 * best_fraction:.1f}% ({best_row.resolution}x"
            f"{best_row.resolution} {best_row.option}; target >= {100 * PEAK_FRACTION_TARGET:.0f}%: {verdict}). "
            "Pipeline end to end (latent draw + generator + output scaling), so the forward alone is a bit faster."
        )
    if ddim is not None and ddpm is not None:
        spread = max(ddim.per_step_s, ddpm.per_step_s) / min(ddim.per_step_s, ddpm.per_step_s)
        if spread > 1.3:
            print(
                f"- WARNING: the same UNet step took {1000 * ddim.per_step_s:.0f} ms in the DDIM runs and "
                f"{1000 * ddpm.per_step_s:.0f} ms in the DDPM run ({spread:.1f}x apart): the machine's load changed "
                "during the run, so treat the diffusion numbers (and ratios) as rough."
            )
    if import_times is not None:
        diff_s, diff_wall = import_times["diffusers"]
        pipe_s, pipe_wall = import_times["pipeline"]
        ours_s, ours_wall = import_times["metagan"]
        extra = ours_s - diff_s
        verdict = "MET" if extra < IMPORT_TARGET_S else "MISSED"
        print(
            f"- fresh process: `import diffusers` {diff_s:.2f} s; `import metagan_hub` + "
            f"`MetaGANPipeline.from_pretrained(<saved 32x32 folder>)` {ours_s:.2f} s -> {extra:.2f} s beyond "
            f"diffusers (target < {IMPORT_TARGET_S:.0f} s: {verdict}); for reference `from diffusers import "
            f"DiffusionPipeline` {pipe_s:.2f} s. Whole-process wall times incl. interpreter start: "
            f"{diff_wall:.2f} / {ours_wall:.2f} / {pipe_wall:.2f} s (median of "
            f"{1 if args.quick else 3})"
        )
    print()
    print(
        f"- load average at end (1/5/15 min): {load_average()}; "
        f"total benchmark time {time.perf_counter() - run_start:.0f} s"
    )


if __name__ == "__main__":
    main()
