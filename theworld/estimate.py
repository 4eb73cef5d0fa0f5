"""``theworld estimate``: memory, FLOPs, speed, time and cost of a training run, before renting a GPU.

The configured model is built without weights (meta device, then fake tensors: no byte of weights is read or
downloaded; the base configs come from a local folder, the Hub cache, or the copies in ``theworld/base_configs``)
and one training step of the configured shape runs under ``FakeTensorMode``: every tensor the step creates is
counted while it lives (``LiveBytes``), every matmul and convolution by ``FlopCounterMode``. Time needs one
number the step cannot give, the share of the GPU's peak FLOP/s that is reached (MFU); the default is the best
MFU measured on the H200 (``bench/RESULTS.md``, checked by ``bench/estimate_check.py``).

Example:
    >>> estimate = estimate_run(TheWorldConfig(), DataConfig(batch_size=8), fsdp_units=default_wrap_layers(),
    ...                         gpu="h100-80gb", gpus=8)
    >>> print(format_table(estimate))
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from theworld.config import TheWorldConfig
from theworld.data.config import DataConfig
from theworld.data.sources import SOURCES, refuse_inapplicable
from theworld.errors import ConfigError
from theworld.hub.strategies import STRATEGIES
from theworld.world import WorldEncoder, resolve_dtype

GiB = 2**30
BASE_CONFIGS = Path(__file__).parent / "base_configs"  # Gemma 3 4B and Cosmos VAE configs, as published


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # what the card reports (nvidia-smi's total)
    bf16_tflops: float  # dense bf16 peak from the vendor's data sheet


GPUS = {
    "h100-80gb": Gpu("NVIDIA H100 80GB HBM3 (SXM)", 81559 / 1024, 989.4),
    "h100-pcie": Gpu("NVIDIA H100 PCIe 80GB", 81559 / 1024, 756.0),
    "h200": Gpu("NVIDIA H200 141GB", 143771 / 1024, 989.4),
    "a100-80gb": Gpu("NVIDIA A100 80GB", 81920 / 1024, 312.0),
    "a100-40gb": Gpu("NVIDIA A100 40GB", 40960 / 1024, 312.0),
    "l40s": Gpu("NVIDIA L40S 48GB", 46068 / 1024, 362.1),
}

# Assumed: what a GPU holds beyond the tensors the step allocates (CUDA context, cuBLAS workspace, allocator
# fragmentation). torch.cuda.max_memory_allocated, which bench/RESULTS.md reports, does not see it.
CUDA_RESERVE_GIB = 2.0


@dataclass(frozen=True)
class Measured:
    """A figure from ``bench/RESULTS.md`` that the estimate takes as an input."""

    value: float
    source: str


# MFU: FLOPs of the step as FlopCounterMode counts them / (step time x 989.4 TFLOP/s), for each H200 row of
# bench/RESULTS.md; bench/estimate_check.py recomputes them all. This is the best.
BEST_MFU = Measured(0.278, "TheWorld default shape B=16 on the H200, bench/RESULTS.md (2026-11-26)")
# Assumed when the Gemma tokenizer is not on this machine: Gemma 3's chat template around the image block
# (<bos><start_of_turn>user, newlines, <start_of_image>, <end_of_image>, <end_of_turn>, <start_of_turn>model)
# is 12 tokens, and a prompt ~1.3 tokens a word ("Describe the image." is 4).
TEMPLATE_TOKENS, TOKENS_PER_PROMPT_WORD = 12, 1.3


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage created under it while the storage lives; ``peak`` is the most.

    Sizes round up to 512 bytes as CUDA's caching allocator does. Storages made before entering are added with
    ``add`` (weights, optimizer state).

    Example:
        >>> with FakeTensorMode(), LiveBytes() as live:
        ...     loss = model(batch).sum(); loss.backward()
        >>> live.peak
    """

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._live: set[int] = set()

    def add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = -(-storage.nbytes() // 512) * 512
        self._live.add(key)
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._live.discard(key)
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.add(leaf)
        return out


def _cpu_flash_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA attention kernels; under fake CPU tensors SDPA takes the CPU flash kernel.
_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops,
}


# ----------------------------------------------------------------------------------------- the model
def base_config_folder(name: str, subfolder: str | None = None) -> Path:
    """Where ``name``'s config.json lies: a local folder, the Hub cache, or the copy kept in ``base_configs``."""
    from huggingface_hub import try_to_load_from_cache

    inner = f"{subfolder}/config.json" if subfolder else "config.json"
    if (Path(name).expanduser() / inner).is_file():
        return Path(name).expanduser()
    if name.count("/") == 1:
        cached = try_to_load_from_cache(name, inner)
        if isinstance(cached, str):
            return Path(cached).parents[1 if subfolder else 0]
    kept = BASE_CONFIGS / name.replace("/", "--")
    if (kept / inner).is_file():
        return kept
    raise ConfigError(
        f"theworld estimate needs the config of {name} (only its config.json, no weights): it is neither a local "
        f"folder, nor in the Hugging Face cache, nor one of the configs kept in {BASE_CONFIGS} "
        f"({', '.join(sorted(p.name.replace('--', '/') for p in BASE_CONFIGS.iterdir()))}). Download it once with "
        f"`hf download {name} {inner}`."
    )


def build_weightless(config: TheWorldConfig, fake_mode) -> torch.nn.Module:
    """TheWorld built on the meta device, then every weight a fake CPU tensor of its shape and dtype."""
    from diffusers import AutoencoderKLWan
    from transformers import AutoConfig, Gemma3ForConditionalGeneration

    from theworld.model import TheWorld

    class Weightless(TheWorld):
        def _text_embedding_rms(self) -> float:
            return 1.0  # a value, which meta tensors have not; it only scales the projector's norm

    dtype = resolve_dtype(config.frozen_dtype if config.frozen_dtype != "auto" else "bfloat16")
    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration._from_config(
            AutoConfig.from_pretrained(base_config_folder(config.gemma_model_name)),
            dtype=dtype,
            attn_implementation=config.attn_implementation,
        )
        encoder = None
        if config.enable_world:
            folder = base_config_folder(config.cosmos_model_name, config.cosmos_subfolder)
            vae = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(folder, subfolder=config.cosmos_subfolder))
            vae.decoder = vae.post_quant_conv = None  # as WorldEncoder.from_pretrained does
            # nn.Module.to: diffusers' own .to warns about dtypes of a model that never runs here.
            encoder = WorldEncoder(torch.nn.Module.to(vae, dtype), config.world_patch_size)
        world = Weightless.from_modules(config, gemma, encoder)
    fakes: dict[int, torch.Tensor] = {}  # one fake per meta tensor: tied weights (Gemma's head) stay tied

    def fake(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in fakes:
            empty = torch.empty(tensor.shape, dtype=tensor.dtype)
            is_param = isinstance(tensor, torch.nn.Parameter)
            fakes[id(tensor)] = torch.nn.Parameter(empty, tensor.requires_grad) if is_param else empty
        return fakes[id(tensor)]

    with fake_mode:
        for module in world.modules():
            # Typed alike: fake() gives a Parameter for a Parameter, a plain tensor for a buffer
            both: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
            for tensors in both:
                for name, tensor in tensors.items():
                    if tensor is not None:
                        tensors[name] = fake(tensor)
    return world


@dataclass(frozen=True)
class StepShape:
    """One training batch: ``batch_size`` samples of ``seq_len`` tokens, ``labelled`` of them answer tokens."""

    batch_size: int
    seq_len: int
    labelled: int


def step_shape(world, data: DataConfig) -> tuple[StepShape, str]:
    """The longest batch the data makes (captions at ``max_caption_tokens``) and how its prompt was counted."""
    config = world.config
    world_block = world.num_world_tokens + 2 if config.enable_world else 0  # + <the_world_start>, <the_world_end>
    image = world.gemma.config.mm_tokens_per_image if config.gemma_image_tokens else 0
    text, how = _prompt_text_tokens(config, data.prompt)
    caption = data.max_caption_tokens + 1  # + <end_of_turn>
    return StepShape(data.batch_size, world_block + image + text + caption, caption), how


def _prompt_text_tokens(config: TheWorldConfig, prompt: str) -> tuple[int, str]:
    folder = Path(config.gemma_model_name).expanduser()
    if (folder / "tokenizer_config.json").is_file():
        from theworld.data.processing import SEG_TEXT, TheWorldProcessor, load_gemma_processor

        processor = TheWorldProcessor(
            load_gemma_processor(str(folder)),
            0,
            config.world_image_size,
            prompt=prompt,
            gemma_image_tokens=config.gemma_image_tokens,
        )
        _, segments = processor._build_prompt(prompt)
        return sum(1 for s in segments if s == SEG_TEXT), "measured: the local tokenizer"
    words = len(prompt.split())
    return TEMPLATE_TOKENS + round(TOKENS_PER_PROMPT_WORD * words), "assumed: Gemma 3 chat template, 1.3 tokens/word"


# ------------------------------------------------------------------------------------- one fake step
@dataclass(frozen=True)
class StepMemory:
    weights: int
    optimizer: int
    peak: int

    @property
    def activations(self) -> int:
        """Everything else live at the peak: the batch, activations kept for backward, gradients, temporaries."""
        return self.peak - self.weights - self.optimizer


def fake_batch(world, shape: StepShape) -> dict[str, torch.Tensor]:
    config, (b, s) = world.config, (shape.batch_size, shape.seq_len)
    batch = {
        "input_ids": torch.zeros(b, s, dtype=torch.long),
        "segment_ids": torch.zeros(b, s, dtype=torch.uint8),
        "attention_mask": torch.ones(b, s, dtype=torch.long),
        "label_positions": torch.zeros(b * shape.labelled, dtype=torch.long),
        "label_targets": torch.zeros(b * shape.labelled, dtype=torch.long),
    }
    if config.gemma_image_tokens:
        size = world.gemma.config.vision_config.image_size
        batch["pixel_values"] = torch.zeros(b, 3, size, size)
    if config.enable_world:
        batch["world_pixels"] = torch.zeros(b, 3, config.world_image_size, config.world_image_size)
    return batch


def adamw_with_state(world) -> torch.optim.Optimizer:
    """AdamW with its state already made (as after the first step)."""
    trainable = [p for p in world.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    for param in trainable:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer


def train_step(world, batch: dict, optimizer: torch.optim.Optimizer) -> None:
    """What ``TheWorldModule`` does per batch under bf16-mixed: forward, backward, AdamW, gradients dropped."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = world(**batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def step_memory(world, fake_mode, shape: StepShape, checkpointing: bool) -> StepMemory:
    """Bytes live at the step's peak; ``fake_mode=None`` runs a real step (the tests compare the two)."""
    set_checkpointing(world, checkpointing)
    with fake_mode or contextlib.nullcontext():
        optimizer = adamw_with_state(world)
        live = LiveBytes()
        for tensor in [*world.parameters(), *world.buffers()]:
            live.add(tensor)
        weights = live.current
        for state in optimizer.state.values():
            for tensor in state.values():
                live.add(tensor)
        optimizer_bytes = live.current - weights
        batch = fake_batch(world, shape)
        for tensor in batch.values():  # on the GPU before the step starts
            live.add(tensor)
        with live:
            train_step(world, batch, optimizer)
    return StepMemory(weights, optimizer_bytes, live.peak)


def step_flops(world, fake_mode, shape: StepShape, checkpointing: bool) -> int:
    """FLOPs of one step as run (with checkpointing: the recomputed forward too)."""
    from torch.utils.flop_counter import FlopCounterMode

    set_checkpointing(world, checkpointing)
    with fake_mode or contextlib.nullcontext():
        optimizer = adamw_with_state(world)
        batch = fake_batch(world, shape)
        # Counted apart from the memory: its module tracker keeps recomputed activations alive.
        with FlopCounterMode(display=False, custom_mapping=_ATTENTION_FLOPS) as counter:
            train_step(world, batch, optimizer)
    return counter.get_total_flops()


def set_checkpointing(world, on: bool) -> None:
    if on:
        world.gemma.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        world.gemma.gradient_checkpointing_disable()
    world.train()


# ---------------------------------------------------------------------------------------- the estimate
@dataclass
class Layout:
    """Per-GPU memory of one strategy, in bytes."""

    weights: int
    optimizer: int
    activations: int
    extra: int  # DDP's gradient buckets, FSDP's gathered units

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations + self.extra


@dataclass
class Estimate:
    gpu: str
    gpus: int
    shape: StepShape
    prompt_tokens_from: str
    trainable_params: int
    frozen_params: int
    flops_per_sample: float
    flops_per_token: float
    recompute_factor: float  # step FLOPs with checkpointing / without
    memory: dict[str, Layout]  # "ddp", "ddp+ckpt", "fsdp", "fsdp+ckpt"
    largest_batch: dict[str, int]
    mfu: Measured
    step_s: float
    step_s_ckpt: float
    tokens_per_s_per_gpu: float
    samples: int | None
    hours: float | None
    gpu_hours: float | None
    loader_workers_per_gpu: int
    loader_rate: Measured
    push_bytes: dict[str, int]
    assumed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for layout in data["memory"].values():
            layout["total"] = sum(layout.values())
        return data


def estimate_run(
    config: TheWorldConfig,
    data: DataConfig,
    *,
    fsdp_units: set[type],
    gpu: str = "h100-80gb",
    gpus: int = 1,
    samples: int | None = None,
    mfu: float | None = None,
    hub_strategy: str = "every_save",
) -> Estimate:
    """``fsdp_units``: the module types FSDP wraps one unit each (``theworld.lit.strategies.default_wrap_layers``)."""
    if gpu not in GPUS:
        raise ConfigError(f"--gpu {gpu}: not a GPU this estimate knows; choose one of {', '.join(GPUS)}.")
    card = GPUS[gpu]
    with warnings.catch_warnings():
        # Deprecations and dtype notes from transformers and torch about a step that only runs on fake tensors.
        warnings.simplefilter("ignore")
        return _estimate(config, data, fsdp_units, card, gpu, gpus, samples, mfu, hub_strategy)


def _estimate(config, data, fsdp_units, card, gpu, gpus, samples, mfu, hub_strategy) -> Estimate:
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_mode = FakeTensorMode()
    world = build_weightless(config, fake_mode)
    shape, prompt_from = step_shape(world, data)
    one = StepShape(1, shape.seq_len, shape.labelled)
    flops_one = step_flops(world, fake_mode, one, checkpointing=False)
    recompute = step_flops(world, fake_mode, one, checkpointing=True) / flops_one
    trainable = sum(p.numel() for p in world.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in world.parameters() if not p.requires_grad)
    trainable_bytes = sum(p.numel() * p.element_size() for p in world.parameters() if p.requires_grad)
    memory, largest = {}, {}
    usable = (card.memory_gib - CUDA_RESERVE_GIB) * GiB
    for ckpt in (False, True):
        step = step_memory(world, fake_mode, shape, checkpointing=ckpt)
        per_sample = step.activations / shape.batch_size
        suffix = "+ckpt" if ckpt else ""
        memory["ddp" + suffix] = Layout(step.weights, step.optimizer, step.activations, trainable_bytes)
        fsdp_weights, gathered = _fsdp_weights(world, fsdp_units, gpus)
        memory["fsdp" + suffix] = Layout(fsdp_weights, step.optimizer // gpus, step.activations, gathered)
        for strategy in ("ddp", "fsdp"):
            layout = memory[strategy + suffix]
            fixed = layout.weights + layout.optimizer + layout.extra
            largest[strategy + suffix] = max(0, int((usable - fixed) // per_sample))
    rate = mfu if mfu is not None else BEST_MFU.value
    mfu_used = Measured(rate, "given with --mfu") if mfu is not None else BEST_MFU
    step_s = flops_one * shape.batch_size / (rate * card.bf16_tflops * 1e12)
    loader_rate = SOURCES[data.source].LOADER_RATE  # samples/s per worker core, as each source declares it
    loader = Measured(loader_rate.samples_per_s, loader_rate.measured)
    hours = samples / (shape.batch_size * gpus) * step_s / 3600 if samples else None
    return Estimate(
        gpu=gpu,
        gpus=gpus,
        shape=shape,
        prompt_tokens_from=prompt_from,
        trainable_params=trainable,
        frozen_params=frozen,
        flops_per_sample=flops_one,
        flops_per_token=flops_one / shape.seq_len,
        recompute_factor=recompute,
        memory=memory,
        largest_batch=largest,
        mfu=mfu_used,
        step_s=step_s,
        step_s_ckpt=step_s * recompute,
        tokens_per_s_per_gpu=shape.batch_size * shape.seq_len / step_s,
        samples=samples,
        hours=hours,
        gpu_hours=hours * gpus if hours is not None else None,
        loader_workers_per_gpu=math.ceil(shape.batch_size / step_s / loader.value),
        loader_rate=loader,
        # a resumable folder adds the AdamW moments (two fp32 tensors a weight) in training_state.pt
        push_bytes=STRATEGIES[hub_strategy].push_bytes(trainable_bytes, training_state=2 * 4 * trainable),
        assumed=[
            f"{CUDA_RESERVE_GIB} GiB per GPU for the CUDA context, workspaces and fragmentation",
            "data-parallel scaling is perfect (the gradients all-reduced are the trainable ones only)",
            "DDP: one gradient bucket copy of the trainable weights; FSDP: the layers outside Gemma's and SigLIP's "
            "decoder blocks stay whole on every GPU, two blocks gathered at a time",
            "every batch is as long as the longest caption allows (max_caption_tokens)",
        ]
        + (
            []
            if config.frozen_dtype == "float32"
            else [
                "FSDP is figured at this frozen_dtype, but TheWorldFSDPStrategy needs model.frozen_dtype float32 "
                "(configs/fsdp.yaml), which doubles the frozen weights"
            ]
        ),
    )


def _fsdp_weights(world: torch.nn.Module, unit_types: set[type[torch.nn.Module]], gpus: int) -> tuple[int, int]:
    """(sharded weights per GPU, bytes of two gathered blocks) with one FSDP unit per decoder block."""
    units = [m for m in world.modules() if isinstance(m, tuple(unit_types))]
    in_units = {id(p) for unit in units for p in unit.parameters()}
    nbytes = lambda params: sum(p.numel() * p.element_size() for p in params)  # noqa: E731
    whole = nbytes(p for p in world.parameters() if id(p) not in in_units)
    sharded = nbytes(p for p in world.parameters() if id(p) in in_units)
    largest_unit = max((nbytes(unit.parameters()) for unit in units), default=0)
    return whole + sharded // gpus, 2 * largest_unit if gpus > 1 else 0


# ------------------------------------------------------------------------------------------ printing
def format_table(est: Estimate) -> str:
    card = GPUS[est.gpu]
    gib = lambda n: f"{n / GiB:.1f} GiB"  # noqa: E731
    rows = [
        (
            "GPU",
            f"{est.gpus} x {card.name} ({card.memory_gib:.1f} GiB, {card.bf16_tflops:g} TFLOP/s bf16)",
            "data sheet",
        ),
        (
            "batch per GPU x tokens",
            f"{est.shape.batch_size} x {est.shape.seq_len} ({est.shape.labelled} labelled)",
            f"config; prompt {est.prompt_tokens_from}",
        ),
        ("parameters", f"{est.trainable_params:,} trainable, {est.frozen_params:,} frozen", "computed"),
        (
            "FLOPs (frozen step)",
            f"{est.flops_per_sample / 1e12:.2f} TFLOP/sample, {est.flops_per_token / 1e9:.2f} GFLOP/token",
            "computed: FlopCounterMode",
        ),
    ]
    for key, label in (
        ("ddp", "DDP"),
        ("ddp+ckpt", "DDP + grad. checkpointing"),
        ("fsdp", "FSDP"),
        ("fsdp+ckpt", "FSDP + grad. checkpointing"),
    ):
        layout = est.memory[key]
        rows.append(
            (
                f"peak memory/GPU, {label}",
                f"{gib(layout.total)} = weights {gib(layout.weights)} + optimizer {gib(layout.optimizer)} + "
                f"activations {gib(layout.activations)} + {'buckets' if 'ddp' in key else 'gathered'} "
                f"{gib(layout.extra)}",
                "computed: fake-tensor step",
            )
        )
    rows.append(
        (
            "largest batch per GPU",
            ", ".join(f"{k} {v}" for k, v in est.largest_batch.items()),
            f"computed: activations grow linearly with the batch; {CUDA_RESERVE_GIB} GiB reserve assumed",
        )
    )
    rows.append(("MFU", f"{est.mfu.value:.3f}", f"measured: {est.mfu.source}"))
    rows.append(
        ("step time", f"{est.step_s:.3f} s ({est.step_s_ckpt:.3f} s with checkpointing)", "computed from FLOPs and MFU")
    )
    rows.append(
        (
            "tokens/s",
            f"{est.tokens_per_s_per_gpu:,.0f} per GPU, {est.tokens_per_s_per_gpu * est.gpus:,.0f} in all",
            "computed",
        )
    )
    if est.samples:
        rows.append((f"{est.samples:,} samples", f"{est.hours:.1f} h, {est.gpu_hours:.1f} GPU-hours", "computed"))
    rows.append(
        (
            "loader workers per GPU",
            f"{est.loader_workers_per_gpu}",
            f"measured: {est.loader_rate.value} samples/s per worker, {est.loader_rate.source}",
        )
    )
    rows.append(("checkpoint push", ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in est.push_bytes.items()), "computed"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{label:<{width}}  {value}\n{'':<{width}}    ({source})" for label, value, source in rows]
    lines += ["assumed:", *(f"  - {assumption}" for assumption in est.assumed)]
    return "\n".join(lines)


def with_json_values(argv: list[str]) -> list[str]:
    """``--json`` without a value means ``--json true`` (the parser wants one for a bool)."""
    values = ("true", "false")
    return [
        f"{arg}=true" if arg == "--json" and (i + 1 == len(argv) or argv[i + 1].lower() not in values) else arg
        for i, arg in enumerate(argv)
    ]


def print_estimate(config, fsdp_units: set[type]) -> None:
    """``theworld estimate``: the parsed ``model:``, ``data:``, ``trainer:`` and ``hub:`` settings to a table."""
    import json
    from dataclasses import fields

    model = config.model
    world_config = TheWorldConfig(**{f.name: model[f.name] for f in fields(TheWorldConfig) if f.name in model})
    data = DataConfig(**{f.name: config.data[f.name] for f in fields(DataConfig) if f.name in config.data})
    refuse_inapplicable(data)
    devices, nodes = config.trainer.get("devices"), config.trainer.get("num_nodes") or 1
    gpus = config.gpus or (devices * nodes if isinstance(devices, int) and devices > 0 else 1)
    est = estimate_run(
        world_config,
        data,
        fsdp_units=fsdp_units,
        gpu=config.gpu,
        gpus=gpus,
        samples=config.samples,
        mfu=config.mfu,
        hub_strategy=config.hub.hub_strategy,
    )
    print(json.dumps(est.to_dict(), indent=2) if config.json else format_table(est))
