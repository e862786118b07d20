"""bf16 CPU inference: the ``Autocast`` wrapper, the CPU-flag check behind its warning, and glibc's freed memory."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from smart_nets.networks.nets import SMARTUNETR, Autocast, SMARTSwin, native_bf16_cpu
from smart_nets.runtime import keep_freed_memory
from tests.helpers import TINY


class _Probe(torch.nn.Module):
    """Records the dtype its linear layer computed in; returns a tensor and a tuple member."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.seen = None

    def forward(self, x):
        y = self.linear(x)
        self.seen = y.dtype
        return y, torch.ones(2, dtype=torch.long)


def test_autocast_runs_the_network_in_bf16_and_hands_back_float32():
    probe = _Probe()
    out, index = Autocast(probe)(torch.rand(3, 4))
    assert probe.seen == torch.bfloat16 and out.dtype == torch.float32 and index.dtype == torch.long
    plain = probe(torch.rand(3, 4))[0]
    assert probe.seen == torch.float32 and plain.dtype == torch.float32  # outside the wrapper nothing changed


def test_autocast_segmentation_stays_close_to_float32_and_shares_the_weights():
    torch.manual_seed(0)
    net = SMARTUNETR(SMARTSwin(in_channels=1, **TINY), out_channels=2).eval()
    wrapped = Autocast(net)
    assert wrapped.network is net  # shared, not copied: the weights loaded into `network` are the ones it runs
    x = torch.rand(2, 1, 64, 64, 64)
    with torch.no_grad():
        reference, bf16 = net(x), wrapped(x)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, reference)  # really computed in bf16
    assert float((bf16 - reference).abs().max()) < 0.1 * float(reference.abs().max())


def test_autocast_refuses_unknown_dtypes_and_devices():
    with pytest.raises(ValueError, match="autocast dtype 'float8'"):
        Autocast(torch.nn.Identity(), dtype="float8")
    with pytest.raises(ValueError, match="autocast device_type 'tpu'"):
        Autocast(torch.nn.Identity(), device_type="tpu")


def test_native_bf16_reads_the_cpu_flags(tmp_path, caplog, monkeypatch):
    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n\nflags\t: fpu\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx512f amx_tile amx_bf16\n")
    without = tmp_path / "old"
    without.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert native_bf16_cpu(with_bf16) and native_bf16_cpu(amx) and native_bf16_cpu(without) is False
    assert native_bf16_cpu(tmp_path / "missing") is None
    monkeypatch.setattr("smart_nets.networks.nets.autocast.native_bf16_cpu", lambda: False)
    with caplog.at_level(logging.WARNING):
        Autocast(torch.nn.Identity())
    assert "neither AVX512-BF16 nor AMX" in caplog.text and "inference_onnx.json" in caplog.text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_keep_freed_memory_takes_on_glibc():
    assert keep_freed_memory() is True


def test_with_precision_wraps_only_for_bf16(monkeypatch, caplog):
    from smart_nets.networks.nets import with_precision

    net = torch.nn.Linear(2, 2)
    assert with_precision(net, "fp32") is net
    wrapped = with_precision(net, "bf16", "cpu")
    assert isinstance(wrapped, Autocast) and wrapped.network is net and wrapped.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision 'half'"):
        with_precision(net, "half")
    monkeypatch.setattr("smart_nets.runtime.native_bf16_cpu", lambda: False)
    with caplog.at_level(logging.WARNING, logger="smart_nets.runtime"):
        assert with_precision(net, "bf16", "cpu") is net
    assert "running in float32" in caplog.text
