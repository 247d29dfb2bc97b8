import pytest
import torch

from kexue import runtime


def test_device_defaults_to_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv("KEXUE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.device().type == expected


def test_device_override_and_bad_values(monkeypatch):
    monkeypatch.setenv("KEXUE_DEVICE", "cpu")
    assert runtime.device() == torch.device("cpu")
    monkeypatch.setenv("KEXUE_DEVICE", "banana")
    with pytest.raises(ValueError, match="KEXUE_DEVICE"):
        runtime.device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("KEXUE_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.device()


def test_seed_from_environment(monkeypatch):
    monkeypatch.delenv("KEXUE_SEED", raising=False)
    assert runtime.seed() == 0
    monkeypatch.setenv("KEXUE_SEED", "3")
    assert runtime.seed() == 3
    for bad in ("x", "-1", "1.5"):
        monkeypatch.setenv("KEXUE_SEED", bad)
        with pytest.raises(ValueError, match="KEXUE_SEED"):
            runtime.seed()


def test_seed_everything_reproduces_streams(monkeypatch):
    monkeypatch.setenv("KEXUE_SEED", "5")
    assert runtime.seed_everything() == 5
    a = torch.rand(3)
    runtime.seed_everything()
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="value"):
        runtime.seed_everything(-2)


def test_generator_depends_on_seed_and_offset(monkeypatch):
    monkeypatch.setenv("KEXUE_SEED", "0")
    a = torch.rand(4, generator=runtime.generator(1, on="cpu"))
    b = torch.rand(4, generator=runtime.generator(1, on="cpu"))
    c = torch.rand(4, generator=runtime.generator(2, on="cpu"))
    monkeypatch.setenv("KEXUE_SEED", "1")
    d = torch.rand(4, generator=runtime.generator(1, on="cpu"))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, d)
    with pytest.raises(TypeError, match="offset"):
        runtime.generator(1.5)


def test_scale(monkeypatch):
    monkeypatch.setenv("KEXUE_DEVICE", "cpu")
    monkeypatch.setenv("KEXUE_SCALE", "auto")
    assert runtime.scale(cpu=10, gpu=1000) == 10
    monkeypatch.setenv("KEXUE_SCALE", "large")
    assert runtime.scale(cpu=10, gpu=1000) == 1000
    monkeypatch.setenv("KEXUE_SCALE", "small")
    assert runtime.scale(cpu=10, gpu=1000) == 10
    monkeypatch.setenv("KEXUE_SCALE", "huge")
    with pytest.raises(ValueError, match="KEXUE_SCALE"):
        runtime.scale(cpu=1, gpu=2)
    monkeypatch.setenv("KEXUE_SCALE", "auto")
    with pytest.raises(TypeError, match="same type"):
        runtime.scale(cpu=1, gpu=2.0)


def test_info_describes_the_run(monkeypatch):
    monkeypatch.setenv("KEXUE_DEVICE", "cpu")
    monkeypatch.setenv("KEXUE_SEED", "2")
    info = runtime.info()
    assert info.device == "cpu" and info.seed == 2 and info.scale == "small"
    assert "seed 2" in str(info)


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("KEXUE_THREADS", "1")
        assert runtime.set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("KEXUE_THREADS", "0")
        with pytest.raises(ValueError, match="KEXUE_THREADS"):
            runtime.set_threads()
    finally:
        torch.set_num_threads(before)
