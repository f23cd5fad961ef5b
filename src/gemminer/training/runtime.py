"""How training runs: numeric precision, compilation, and the process group (torchrun).

A :class:`Runtime` is passed explicitly to the training loops; the default one is a
single process in fp32 without compilation. Under ``torchrun`` (PyTorch DDP),
:func:`start_runtime` joins the process group (NCCL on GPUs, gloo on CPUs) and every
rank runs the same code: the training module is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, each rank draws its slice of every
global batch (:class:`~gemminer.data.loader.BatchLoader` ``shard``), epoch figures are
summed over ranks, masks are broadcast from rank 0, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from ..settings.config import DEFAULT_DEVICE, DEFAULT_PRECISION

PRECISIONS = ("fp32", "bf16")
#: What ``--precision`` accepts: a precision, or ``auto`` (see :func:`auto_precision`).
PRECISION_CHOICES = ("auto", *PRECISIONS)

#: Under DDP a stop signal is agreed on every this many steps (one tiny all-reduce), so
#: that every rank stops after the same step without a collective in every step.
STOP_POLL_STEPS = 20


@dataclass(frozen=True)
class Runtime:
    """``precision``: ``fp32``, or ``bf16`` autocast (scores, weights, gradients and the
    optimizer stay fp32); ``compile``: ``torch.compile`` the training module;
    ``rank``/``world_size``: this process in the torchrun group (1 process: no group).
    ``comm_device``: where collectives run (``cuda`` for NCCL, ``cpu`` for gloo).
    ``precision_reason``: why ``--precision auto`` chose ``precision`` ("" if it was given).
    ``deadline``: the ``time.monotonic()`` after which a training stage checkpoints and
    stops as on SIGTERM (``--time-limit``; ``None``: none)."""

    precision: str = "fp32"
    compile: bool = False
    rank: int = 0
    world_size: int = 1
    comm_device: str = "cpu"
    precision_reason: str = ""
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}"
            )
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} outside a world of size {self.world_size}")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes files."""
        return self.rank == 0

    # Compute ------------------------------------------------------------------------------
    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast on ``device`` under ``precision="bf16"``, else nothing."""
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def training_module(self, model: nn.Module, device: torch.device | str) -> nn.Module:
        """The module a training loop calls: ``model`` in DDP across ranks, compiled if
        asked. Parameters stay those of ``model``, so optimizers and in-place updates
        (projection, freezing, masks) act on ``model`` directly."""
        net = model
        device = torch.device(device)
        if self.distributed:
            ids = None
            if device.type == "cuda":
                ids = [device.index if device.index is not None else torch.cuda.current_device()]
            _lay_out_grads_like_params(model)
            # BatchNorm statistics are averaged over ranks after each epoch instead of
            # broadcast from rank 0 before every forward pass (see train_epoch)
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids, **_NO_BUFFER_SYNC)
        if self.compile:
            net = torch.compile(net)
        return net

    # Collectives (no-ops in one process) -------------------------------------------------
    def sum(self, values: Sequence[float | int | torch.Tensor]) -> list[float]:
        """Each value summed over ranks, in one all-reduce (read on the host: call it at
        epoch ends, not inside a step)."""
        flat = torch.stack([torch.as_tensor(v, dtype=torch.float64).cpu() for v in values])
        if self.distributed:
            flat = flat.to(self.comm_device)
            dist.all_reduce(flat)
        return flat.cpu().tolist()

    def max(self, value: int) -> int:
        """``value``'s maximum over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        return bool(self.max(int(flag)))

    @torch.no_grad()
    def average_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor in place by its mean over ranks."""
        if not self.distributed:
            return
        for t in tensors:
            staged = t.detach().to(self.comm_device)
            dist.all_reduce(staged)
            t.copy_(staged.to(t.device) / self.world_size)

    @torch.no_grad()
    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's values."""
        if not self.distributed:
            return
        for t in tensors:
            staged = t.detach().to(self.comm_device)
            if staged.dtype == torch.bool:
                staged = staged.to(torch.uint8)
            dist.broadcast(staged, src=0)
            t.copy_(staged.to(device=t.device, dtype=t.dtype))

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE = Runtime()

#: DDP's argument that stops it broadcasting buffers before each forward pass:
#: ``forward_sync_buffers`` since PyTorch 2.13 (``broadcast_buffers``, which it replaces,
#: now warns). Unlike ``broadcast_buffers=False`` it still copies rank 0's buffers once
#: when DDP is built; they are the same on every rank then anyway (BatchNorm statistics
#: are averaged after each epoch, score flags broadcast after each change).
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)

#: Attribute that marks a parameter as carrying the hook of :func:`_lay_out_grads_like_params`.
_HOOK_MARK = "_gemminer_strided_grad_hook"


def _lay_out_grads_like_params(model: nn.Module) -> None:
    """Give each gradient of a parameter with a size-1 dimension the parameter's strides.

    Strides along a dimension of size 1 do not move through memory, so a 1x1 convolution's
    channels_last weight (O, I, 1, 1) may have strides (I, 1, I, I) while an elementwise
    backward (the straight-through estimators, the finetuning mask) returns its gradient
    with strides (I, 1, 1, 1): the same memory layout. Autograd accepts that gradient as
    it is, but DDP compares every stride with its bucket's (laid out like the parameter)
    and warns "grad strides do not match bucket view strides". A hook, run before the
    gradient is accumulated, views it with the parameter's strides (no copy). Each
    parameter is hooked once (marked by an attribute); the hook holds it weakly.
    """
    for p in model.parameters():
        if not (p.requires_grad and p.dim() > 1 and 1 in p.shape):
            continue
        if getattr(p, _HOOK_MARK, False):
            continue
        p.register_hook(_strided_like(weakref.ref(p)))
        setattr(p, _HOOK_MARK, True)


def _strided_like(ref: weakref.ref[nn.Parameter]):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        param = ref()
        if param is None or grad.layout != torch.strided or grad.shape != param.shape:
            return grad
        if grad.stride() == param.stride():
            return grad
        if any(n != 1 and a != b for n, a, b in zip(param.shape, grad.stride(), param.stride())):
            return grad  # a real layout difference: autograd copies it into the parameter's
        return grad.as_strided(param.shape, param.stride(), grad.storage_offset())

    return hook


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16), where
    oneDNN runs bf16 convolutions faster than fp32; False elsewhere (bf16 is then
    emulated and slower)."""
    try:  # the kernel's CPU flags (Linux); elsewhere assume not
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def auto_precision(device: str | torch.device) -> tuple[str, str]:
    """What ``--precision auto`` picks on ``device`` (``"auto"``: CUDA when present, else the
    CPU), and why in a few words (shown on a run's first lines). Chosen by measurement:

    * CUDA: fp32 (with PyTorch's default TF32 convolutions). On an NVIDIA H200, ResNet-20 at
      batch 128 took 8.3 ms a dense step in fp32 against 9.6 ms under bf16 autocast, mining
      12.7 against 12.9 ms, finetuning 8.9 against 10.5 ms (issue 25, gemminer at 4f33cf0):
      the step is bound by kernel launches, and autocast adds a cast per layer; fp32 is
      also the authors' precision.
    * CPUs with bf16 matrix instructions (AMX-BF16 or AVX512-BF16, :func:`cpu_has_fast_bf16`):
      bf16, 1.5–1.8× fp32's step (benchmarks/results/throughput_resnet20_cpu*.md) with
      the accuracy within the seed spread: 54.71 ± 1.54 % against 53.87 ± 2.72 % after
      finetuning, 6 seeds (benchmarks/results/precision_resnet20_cifar10.md).
    * Other CPUs and devices: fp32 (bf16 would be emulated, slower).
    """
    kind = (auto_device() if str(device) == "auto" else torch.device(device)).type
    if kind == "cuda":
        return "fp32", "auto: measured faster than bf16 on CUDA"
    if kind == "cpu" and cpu_has_fast_bf16():
        return "bf16", "auto: this CPU has bf16 matrix instructions"
    if kind == "cpu":
        return "fp32", "auto: this CPU has no bf16 matrix instructions"
    return "fp32", f"auto: on {kind}"


def precision_choice(precision: str, device: str | torch.device) -> tuple[str, str]:
    """The precision a run on ``device`` uses and, when ``precision`` is ``auto``, why
    :func:`auto_precision` picked it (else ""). bf16 autocast keeps scores, weights,
    gradients and the optimizer in fp32."""
    if precision not in PRECISION_CHOICES:
        raise ConfigError(
            f"unknown precision {precision!r}; choose from {', '.join(PRECISION_CHOICES)}"
        )
    return auto_precision(device) if precision == "auto" else (precision, "")


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` itself, or for ``auto`` what :func:`auto_precision` picks on ``device``."""
    return precision_choice(precision, device)[0]


def auto_device() -> torch.device:
    """What ``--device auto`` means: CUDA when this PyTorch sees a GPU, else the CPU (the
    one place that decides it)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device = DEFAULT_DEVICE) -> torch.device:
    """``"auto"`` → :func:`auto_device`; any other name is checked (:func:`check_device`)
    and returned as a :class:`torch.device`."""
    if str(name) == "auto":
        return auto_device()
    return check_device(name)


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a :class:`torch.device`, or a :class:`ConfigError` saying why it cannot
    be used: not a device name, CUDA asked of a PyTorch without it (or with fewer GPUs),
    MPS where there is none."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"unknown device {str(name)!r} ({exc}); use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(name)!r}: this PyTorch ({torch.__version__}) sees no CUDA GPU; "
                "use --device cpu (or auto), or install a CUDA build of PyTorch"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {str(name)!r}: only {count} CUDA GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(name)!r}: MPS is not available on this machine")
    return device


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun started with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def start_runtime(
    device: str | None = None,
    *,
    precision: str = DEFAULT_PRECISION,
    compile: bool = False,
    threads: int | None = None,
    time_limit: float | None = None,
) -> Iterator[tuple[Runtime, str]]:
    """The runtime of this process and the device it trains on: the one resolver of the
    run-time settings — ``device`` (checked; ``auto``, the default: :func:`auto_device`),
    ``precision`` (``auto``: :func:`auto_precision` for that device), ``threads`` (CPU
    threads of this process, restored afterwards; ``None``: PyTorch's) and ``time_limit``
    (seconds from now after which training checkpoints and stops: ``Runtime.deadline``).

    Outside torchrun: one process on ``device``. Under torchrun (``WORLD_SIZE`` > 1): joins
    the default process group for the duration (NCCL with one GPU per local rank when
    CUDA is used, gloo otherwise) and leaves it afterwards.
    """
    device = device or DEFAULT_DEVICE
    if device != "auto":
        check_device(device)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    try:
        with _process_group(device, precision, compile) as (runtime, chosen):
            yield replace(runtime, deadline=deadline), chosen
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _process_group(device: str, precision: str, compile: bool) -> Iterator[tuple[Runtime, str]]:
    """:func:`start_runtime` once the threads are set: one process, or a torchrun rank."""
    if not launched_by_torchrun():
        chosen, why = precision_choice(precision, device)
        yield Runtime(precision=chosen, compile=compile, precision_reason=why), device
        return
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        if torch.cuda.device_count() <= local:
            raise ConfigError(
                f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device == "auto":
        device = str(auto_device())
    backend = "nccl" if cuda else "gloo"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend, rank=rank, world_size=world)
    chosen, why = precision_choice(precision, device)
    try:
        yield (
            Runtime(chosen, compile, rank, world, "cuda" if cuda else "cpu", why),
            device,
        )
        if started:
            # Every rank done communicating before any closes its connections: without
            # this barrier a gloo rank aborted at exit ("terminate called without an
            # active exception") in 13 of 70 two-rank runs of tests/ddp_worker.py, after
            # its results were written; with it, in none of 80. Not on an error's way
            # out, where the other ranks may never reach it.
            dist.barrier()
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
