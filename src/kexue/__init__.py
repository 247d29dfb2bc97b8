"""kexue: the helper library of *Scientific Spaces, executed*.

Small, flat and tested. Modules:

- :mod:`kexue.runtime`: device, seed, problem-size scale, dtype policy.
- :mod:`kexue.claims`: symbolic and numeric claims, and the per-chapter summary.
- :mod:`kexue.plotting`: the book's figure style.
- :mod:`kexue.autodiff`: Hessian-vector products, per-sample gradients, Hessians.
- :mod:`kexue.optim`: optimizer utilities (global gradient norm, ...).
- :mod:`kexue.stats`: small statistics helpers (log-log slopes, EMAs, standard errors).
- :mod:`kexue.toys`: toy data sets and models with known answers.
- Chapter-specific maths worth testing alone: :mod:`kexue.linalg`, :mod:`kexue.lora`,
  :mod:`kexue.lrscaling`, :mod:`kexue.adaptive`, :mod:`kexue.crf`, :mod:`kexue.attention`,
  :mod:`kexue.moe`, :mod:`kexue.moe_geometry`, :mod:`kexue.vq`, :mod:`kexue.gradflow`,
  :mod:`kexue.gans`.
- :mod:`kexue.sphinxext`: the book's Sphinx extension (verification report, local MathJax).

A chapter starts with :func:`begin` and ends with ``claims.summary()``.
"""

from __future__ import annotations

from . import claims, plotting, runtime

__version__ = "0.1.0"
__all__ = ["__version__", "begin", "claims", "glue", "plotting", "runtime"]


def begin(chapter: str) -> None:
    """Start a chapter: seed everything from ``KEXUE_SEED``, apply the figure style,
    reset the claims, and print what this run uses (``runtime.info()`` returns it).

    Returns ``None`` so that, as the last line of a cell, it adds no second output.
    """
    if not isinstance(chapter, str) or not chapter.strip():
        raise ValueError("chapter must be a non-empty str, e.g. 'gradient-clipping'")
    runtime.seed_everything()
    runtime.set_threads()
    plotting.apply()
    claims.reset(chapter)
    print(f"kexue {__version__}: {runtime.info()}")


def glue(name: str, value: object, *, display: bool = False) -> object:
    """Make ``value`` available to the page's prose as ``{glue:text}`name```; returns ``value``.

    Uses ``myst_nb.glue`` when MyST-NB is installed (book builds, nbmake); elsewhere (e.g.
    Colab) it does nothing but return ``value``, so a chapter runs anywhere.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty str")
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value
