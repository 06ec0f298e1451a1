"""The peak FLOP/s that training's MFU and the GPU benchmark are measured against."""

from __future__ import annotations

import pytest
import torch

from lmlab.callbacks.throughput import compute_dtype, peak_flops


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H200", 989.4),  # Lightning's table has no plain "H200" and lists the H200 SXM at its sparse peak
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.1),
        ("NVIDIA L4", 121.0),
    ],
)
def test_half_precision_peaks_are_the_dense_tensor_core_ones(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    for dtype in (torch.bfloat16, torch.float16):
        assert peak_flops(torch.device("cuda"), dtype) == pytest.approx(tflops * 1e12)


def test_no_peak_is_known_for_the_cpu_or_an_unknown_gpu(monkeypatch):
    assert peak_flops(torch.device("cpu"), torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    with pytest.warns(UserWarning, match="FLOPs not found"):
        assert peak_flops(torch.device("cuda"), torch.bfloat16) is None


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16), ("16-mixed", torch.float16),
     ("16-true", torch.float16), ("32-true", torch.float32), ("64-true", torch.float64)],
)  # fmt: skip
def test_compute_dtype_of_each_lightning_precision(precision, dtype):
    assert compute_dtype(precision) is dtype
