import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from kexue import plotting


def test_figure_has_opaque_white_background():
    fig, axes = plotting.figure(1, 2)
    assert len(axes) == 2
    assert matplotlib.colors.to_hex(fig.get_facecolor()) == "#ffffff"
    assert matplotlib.rcParams["savefig.transparent"] is False
    plotting.reference_line(axes[0], 1.0, label="tau = 1")
    plotting.reference_line(axes[1], 2.0, axis="x")
    plt.close(fig)


def test_bad_arguments():
    with pytest.raises(ValueError, match="nrows"):
        plotting.figure(0)
    with pytest.raises(ValueError, match="width"):
        plotting.figure(width=-1)
    fig, ax = plotting.figure()
    with pytest.raises(ValueError, match="axis"):
        plotting.reference_line(ax, 1.0, axis="z")
    plt.close(fig)
