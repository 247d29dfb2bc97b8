"""Where and how a chapter runs: device, seed, problem-size scale and dtype policy.

Environment variables (all optional):

``KEXUE_DEVICE``
    ``cpu``, ``cuda`` or ``cuda:N``. Default: CUDA when available, else CPU.
``KEXUE_SEED``
    Integer seed for torch, NumPy and ``random``. Default: 0.
``KEXUE_SCALE``
    ``auto`` (default: GPU sizes on a GPU, CPU sizes on a CPU), ``small`` (CPU sizes
    everywhere) or ``large`` (GPU sizes everywhere, slow on a CPU).
``KEXUE_THREADS``
    Number of CPU threads torch may use (default 1: the chapters' CPU problems are small,
    and tests run two chapters at once on two cores, where extra threads only contend).
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

#: Default floating dtype of the experiments. Chapters that check identities to
#: round-off use ``EXACT_DTYPE`` explicitly and say so.
DEFAULT_DTYPE = torch.float32
#: dtype for checks whose tolerance is an argument about float64 round-off.
EXACT_DTYPE = torch.float64

_SCALES = ("auto", "small", "large")


def device() -> torch.device:
    """The device chapters compute on: ``KEXUE_DEVICE`` if set, else CUDA if present, else CPU."""
    requested = os.environ.get("KEXUE_DEVICE", "").strip()
    if requested:
        try:
            dev = torch.device(requested)
        except RuntimeError as exc:
            raise ValueError(
                f"KEXUE_DEVICE={requested!r} is not a torch device; expected 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"KEXUE_DEVICE={requested!r} but CUDA is not available on this machine")
        return dev
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def seed() -> int:
    """The run's seed, from ``KEXUE_SEED`` (default 0)."""
    raw = os.environ.get("KEXUE_SEED", "0").strip() or "0"
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"KEXUE_SEED must be an integer, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"KEXUE_SEED must be non-negative, got {value}")
    return value


def seed_everything(value: int | None = None) -> int:
    """Seed ``random``, NumPy and torch (all devices) with ``value`` or :func:`seed`; return it."""
    if value is None:
        value = seed()
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"value must be a non-negative int, got {value!r}")
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    return value


def generator(offset: int = 0, on: torch.device | str | None = None) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``on`` (default :func:`device`) seeded with ``seed() + offset``.

    Use one generator per experiment so that adding an experiment does not change the
    random numbers of the others.
    """
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise TypeError(f"offset must be an int, got {type(offset).__name__}")
    dev = torch.device(on) if on is not None else device()
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed() * 1_000_003 + offset)
    return gen


def scale_mode() -> str:
    """``KEXUE_SCALE`` normalised to one of ``auto``, ``small``, ``large``."""
    mode = os.environ.get("KEXUE_SCALE", "auto").strip().lower() or "auto"
    if mode not in _SCALES:
        raise ValueError(f"KEXUE_SCALE must be one of {_SCALES}, got {mode!r}")
    return mode


def is_large() -> bool:
    """True when chapters should use their GPU-scale problem sizes."""
    mode = scale_mode()
    if mode == "auto":
        return device().type == "cuda"
    return mode == "large"


def scale(cpu: T, gpu: T) -> T:
    """Pick a problem size: ``gpu`` at large scale (see :func:`is_large`), else ``cpu``."""
    if type(cpu) is not type(gpu):
        raise TypeError(f"cpu and gpu must have the same type, got {type(cpu).__name__} and {type(gpu).__name__}")
    return gpu if is_large() else cpu


def set_threads() -> int:
    """Set torch's intra-op CPU threads from ``KEXUE_THREADS`` (default 1); return the number."""
    raw = os.environ.get("KEXUE_THREADS", "1").strip() or "1"
    try:
        n = int(raw)
    except ValueError as exc:
        raise ValueError(f"KEXUE_THREADS must be a positive integer, got {raw!r}") from exc
    if n < 1:
        raise ValueError(f"KEXUE_THREADS must be a positive integer, got {n}")
    torch.set_num_threads(n)
    return n


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    import sys

    return "google.colab" in sys.modules


@dataclass(frozen=True)
class RunInfo:
    """What a chapter ran with; shown at the top of a chapter and in the report."""

    device: str
    device_name: str
    seed: int
    scale: str
    torch: str
    python: str

    def __str__(self) -> str:
        return (
            f"device {self.device} ({self.device_name}), seed {self.seed}, "
            f"{self.scale} sizes, torch {self.torch}, Python {self.python}"
        )


def info() -> RunInfo:
    """Describe the current run (device, seed, scale, versions)."""
    dev = device()
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine() or "CPU"
    return RunInfo(
        device=str(dev),
        device_name=name,
        seed=seed(),
        scale="large" if is_large() else "small",
        torch=torch.__version__,
        python=platform.python_version(),
    )


def synchronize() -> None:
    """Wait for queued GPU work (so that wall-clock timings are honest); no-op on CPU."""
    if device().type == "cuda":
        torch.cuda.synchronize()
