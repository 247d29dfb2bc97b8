"""Adaptive optimizers as curvature estimators: Adam on a noisy quadratic, Gauss-Newton matrices.

- :func:`adam_on_noisy_quadratic` runs many independent Adam chains at once on the
  diagonal quadratic ``L(theta) = 1/2 sum_i h_i theta_i^2`` (minimiser ``theta* = 0``)
  with Gaussian gradient noise, and returns time averages of Adam's ``sqrt(v_hat)`` and
  of the squared distance to the minimiser after a burn-in.
- :func:`gauss_newton` returns ``J^T J / N`` for a model with one scalar output, where
  ``J`` is the ``N x P`` matrix of per-sample output gradients.

Both work on CPU and CUDA tensors and keep the dtype of their inputs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from . import _checks

__all__ = ["adam_on_noisy_quadratic", "gauss_newton"]


def _as_tensor_like(value: torch.Tensor | float, name: str, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        _checks.tensor(value, name)
        if value.device != like.device:
            raise ValueError(f"{name} is on {value.device} but h is on {like.device}")
        return value.to(like.dtype)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run tiny CPU tensor loops on one intra-op thread (threads only add overhead there,
    and a lot of it on a loaded machine); restores the previous setting."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def adam_on_noisy_quadratic(
    h: torch.Tensor,
    noise_std: torch.Tensor | float,
    steps: int,
    lr: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 0.0,
    reps: int = 8,
    start: torch.Tensor | float | None = None,
    burn_frac: float = 0.5,
    shared_noise_dims: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``reps`` independent Adam chains on a diagonal quadratic with noisy gradients.

    The loss is ``L(theta) = 1/2 sum_i h_i theta_i^2`` (minimiser ``theta* = 0``) and the
    gradient Adam sees at step ``t`` is ``g_t = h * theta_t + noise_std * z_t`` with
    ``z_t ~ N(0, I)`` drawn afresh for every chain and coordinate. The update is exactly
    ``torch.optim.Adam``'s (bias-corrected ``m_hat / (sqrt(v_hat) + eps)``, no weight decay).

    Args:
        h: curvatures, shape ``(..., d)``; leading dimensions are extra batch dimensions
            (e.g. one row per batch size), broadcast against ``noise_std``.
        noise_std: standard deviation of the gradient noise, a float or a tensor
            broadcastable with ``h``.
        steps: number of Adam steps.
        lr: learning rate.
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's epsilon (default 0, as in the chapter on Hessian approximation).
        reps: number of independent chains (the new leading dimension of every output).
        start: initial ``theta`` (broadcastable to the state shape); ``None`` starts at the
            minimiser ``theta* = 0``.
        burn_frac: fraction of the steps discarded before time averages are taken.
        shared_noise_dims: dimensions of ``broadcast(h, noise_std)`` along which every
            entry sees the *same* standard-normal draws ``z_t`` (common random numbers,
            e.g. one row per batch size: differences between rows are then much less
            noisy). The chains (``reps``) always get independent draws.
        generator: ``torch.Generator`` on ``h``'s device for the noise (reproducibility).

    Returns:
        A dict of tensors of shape ``(reps, *broadcast(h, noise_std).shape)``:
        ``sqrt_vhat_mean`` (time average of ``sqrt(v_hat_t)`` after the burn-in),
        ``vhat_mean`` (time average of ``v_hat_t``; with ``sqrt_vhat_mean`` it gives the
        size of ``sqrt(v_hat)``'s fluctuations in time),
        ``delta_sq_mean`` (time average of ``theta_t^2`` after the burn-in, i.e. the
        stationary jitter around the minimiser), ``grad_sq_mean`` (time average of
        ``g_t^2``), and the final ``theta``, ``m`` and ``v`` (raw, not bias-corrected).
    """
    _checks.tensor(h, "h")
    if h.ndim < 1:
        raise ValueError(f"h must have at least one dimension (the coordinates), got shape {tuple(h.shape)}")
    noise = _as_tensor_like(noise_std, "noise_std", h)
    if bool((noise < 0).any()):
        raise ValueError("noise_std must be non-negative")
    _checks.positive_int(steps, "steps")
    _checks.positive_int(reps, "reps")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    beta1 = _checks.probability(betas[0], "betas[0]")
    beta2 = _checks.probability(betas[1], "betas[1]")
    if beta2 == 0.0:
        raise ValueError("betas[1] must be positive")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    if not isinstance(burn_frac, (int, float)) or isinstance(burn_frac, bool) or not 0 <= burn_frac < 1:
        raise ValueError(f"burn_frac must lie in [0, 1), got {burn_frac!r}")
    _checks.generator_for(generator, h, "h")
    try:
        shape = (reps, *torch.broadcast_shapes(h.shape, noise.shape))
    except RuntimeError as exc:
        raise ValueError(f"noise_std of shape {tuple(noise.shape)} does not broadcast with h {tuple(h.shape)}") from exc

    if not isinstance(shared_noise_dims, (tuple, list)):
        raise TypeError(f"shared_noise_dims must be a tuple of ints, got {type(shared_noise_dims).__name__}")
    noise_shape = list(shape)
    for dim in shared_noise_dims:
        if not isinstance(dim, int) or isinstance(dim, bool) or not -(len(shape) - 1) <= dim < len(shape) - 1:
            raise ValueError(f"shared_noise_dims entries must index the {len(shape) - 1} dimensions of h, got {dim!r}")
        noise_shape[1 + dim % (len(shape) - 1)] = 1

    theta = torch.zeros(shape, dtype=h.dtype, device=h.device)
    if start is not None:
        theta = theta + _as_tensor_like(start, "start", h)
    elif eps == 0 and bool((noise == 0).any()):
        raise ValueError("with eps=0, start=None and zero noise_std, Adam divides 0 by 0; give start, eps or noise")
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    burn = int(burn_frac * steps)
    sum_sqrt_vhat = torch.zeros_like(theta)
    sum_delta_sq = torch.zeros_like(theta)
    sum_grad_sq = torch.zeros_like(theta)
    sum_vhat = torch.zeros_like(theta)
    with _one_cpu_thread(h.device):
        for t in range(1, steps + 1):
            z = torch.randn(noise_shape, generator=generator, dtype=h.dtype, device=h.device)
            g = h * theta + noise * z
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = v.sqrt().div_(math.sqrt(1 - beta2**t))  # sqrt(v_hat_t)
            if t > burn:
                sum_sqrt_vhat += denom
                sum_vhat.addcmul_(denom, denom)
                sum_delta_sq.addcmul_(theta, theta)
                sum_grad_sq.addcmul_(g, g)
            theta.addcdiv_(m, denom.add_(eps), value=-lr / (1 - beta1**t))
    n_avg = steps - burn
    return {
        "sqrt_vhat_mean": sum_sqrt_vhat / n_avg,
        "vhat_mean": sum_vhat / n_avg,
        "delta_sq_mean": sum_delta_sq / n_avg,
        "grad_sq_mean": sum_grad_sq / n_avg,
        "theta": theta,
        "m": m,
        "v": v,
    }


def gauss_newton(model: torch.nn.Module, inputs: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """The Gauss-Newton matrix ``J^T J / N`` of a model with one scalar output per sample.

    ``J`` is the ``N x P`` matrix whose row ``n`` is the gradient of the model's output at
    ``inputs[n]`` with respect to all parameters that require grad, in the order of
    ``model.parameters()`` (the same order as :func:`kexue.autodiff.per_sample_grads`).
    For the loss ``1/(2N) sum_n (y_n - f(x_n))^2`` this is the Hessian without the
    residual-curvature term. The output may have shape ``()`` or ``(1,)`` per sample.
    ``chunk_size`` bounds how many samples are differentiated at once (memory).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _checks.tensor(inputs, "inputs")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have a non-empty leading (sample) dimension, got shape {tuple(inputs.shape)}")
    if chunk_size is not None:
        _checks.positive_int(chunk_size, "chunk_size")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("model has no parameters that require grad")
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def output(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, p, (x.unsqueeze(0),))
        if out.numel() != 1:
            raise ValueError(f"model must have one scalar output per sample, got output shape {tuple(out.shape)}")
        return out.reshape(())

    jac = torch.func.vmap(torch.func.jacrev(output), in_dims=(None, 0), chunk_size=chunk_size)(params, inputs)
    rows = torch.cat([jac[n].reshape(inputs.shape[0], -1) for n in names], dim=1)
    return rows.T @ rows / inputs.shape[0]
