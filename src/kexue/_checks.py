"""Input checks shared by kexue's functions: clear errors naming the argument."""

from __future__ import annotations

from typing import Any

import torch


def tensor(value: Any, name: str, *, ndim: int | tuple[int, ...] | None = None, floating: bool = True) -> torch.Tensor:
    """Return ``value`` if it is a tensor of the right rank (and floating dtype), else raise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(value.shape)}"
            )
    return value


def positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def probability(value: Any, name: str, *, open_right: bool = True) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0.0 <= value < 1.0 if open_right else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1{')' if open_right else ']'}, got {value!r}")
    return float(value)


def generator_for(generator: Any, like: torch.Tensor, like_name: str) -> torch.Generator | None:
    """``None``, or a ``torch.Generator`` on the same device type as ``like`` (else raise)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != like.device.type:
        raise ValueError(
            f"generator is on {generator.device} but {like_name} is on {like.device}; put them on one device"
        )
    return generator
