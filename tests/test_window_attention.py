"""Window attention's state: the window tensors belong to the model (follow ``.to()``, freed with it, shared by the
blocks of a stage and by nothing else), are rebuilt for a new grid, are made the same way in and out of
``torch.compile``, and the encoder compiles as one graph."""

from __future__ import annotations

import copy
import gc
import itertools
import pickle
import weakref

import pytest
import torch

from smart_nets.networks.blocks import window_attention
from smart_nets.networks.blocks.window_attention import WindowCache, window_tensors, window_tensors_in_graph
from smart_nets.networks.nets import SMARTSwin
from tests.helpers import TINY

SHIFTED = TINY | {"depths": (1, 2, 1, 2)}  # shifted blocks in stages 2 and 4
# stage grids 16x32x48, 8x16x24, 4x8x12 and 2x4x6: stage 4 clips the window to 2x4x4, shifts only (0, 2, 2) and pads
# to 2x4x8
SIZE = (32, 64, 96)


def _net(**kwargs) -> SMARTSwin:
    return SMARTSwin(**(SHIFTED | kwargs)).eval()


def _caches(net) -> list[WindowCache]:
    return [stage.windows for stage in net.stages]


def _held(net) -> list[torch.Tensor]:
    return [t for cache in _caches(net) for t in cache.tensors()]


def _run(net, size=(64, 64, 64), dtype=torch.float32, device="cpu"):
    with torch.no_grad():
        return net(torch.randn(1, 1, *size, generator=torch.Generator().manual_seed(0)).to(device, dtype))


def test_window_tensors_are_the_models_and_freed_with_it():
    assert not [
        name for name, value in vars(window_attention).items() if hasattr(value, "cache_info")
    ], "a process-wide (lru_cache) cache in window_attention"
    net = _net()
    _run(net)
    held = _held(net)
    assert any(t.ndim == 3 for t in held) and any(t.dtype == torch.int64 for t in held)  # a shift mask, orders
    refs = [weakref.ref(t) for t in held] + [weakref.ref(net)]
    del net, held
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_a_stage_shares_one_cache_among_its_blocks_and_models_share_nothing():
    a, b = _net(), _net()
    for stage in a.stages:
        assert all(block.windows is stage.windows for block in stage.blocks)
    assert len({id(c) for c in _caches(a)}) == len(a.stages)
    _run(a)
    teacher = copy.deepcopy(a)  # the EMA teacher
    restored = pickle.loads(pickle.dumps(a))
    for other in (teacher, restored):
        assert all(len(cache) == 0 for cache in _caches(other))
        assert all(block.windows is stage.windows for stage in other.stages for block in stage.blocks)
    _run(b)
    _run(teacher)
    ptrs = {t.data_ptr() for t in _held(a)}
    assert ptrs and not ptrs & {t.data_ptr() for t in _held(b) + _held(teacher)}
    assert not {id(c) for c in _caches(a)} & {id(c) for c in _caches(b) + _caches(teacher)}


def test_window_tensors_follow_to():
    net = _net()
    out32 = _run(net)
    assert {(t.device.type, t.dtype) for t in _held(net) if t.is_floating_point()} == {("cpu", torch.float32)}
    net.double()
    assert not _held(net)
    out64 = _run(net, dtype=torch.float64)
    assert {(t.device.type, t.dtype) for t in _held(net) if t.is_floating_point()} == {("cpu", torch.float64)}
    torch.testing.assert_close(out64.cls_token.float(), out32.cls_token, atol=1e-4, rtol=1e-4)
    cpu_refs = [weakref.ref(t) for t in _held(net)]
    net.to("meta")  # another device, on a machine without a GPU
    gc.collect()
    assert not _held(net) and all(ref() is None for ref in cpu_refs)  # nothing left on the old device
    _run(net, dtype=torch.float64, device="meta")
    assert _held(net) and {t.device.type for t in _held(net)} == {"meta"}


def test_a_new_input_size_rebuilds_the_window_tensors():
    net = _net()
    first = _run(net)
    grid = net.stages[1].windows._grid
    assert grid == (16, 16, 16)
    other = _run(net, size=SIZE)
    assert [cache._grid for cache in _caches(net)] == [(16, 32, 48), (8, 16, 24), (4, 8, 12), (2, 4, 8)]
    assert all(len(cache) <= 2 for cache in _caches(net))  # the latest grid only: an unshifted and a shifted entry
    assert max(t.shape[0] for t in net.stages[1].windows.tensors()) == 8 * 16 * 24
    fresh = copy.deepcopy(net)
    for a, b in zip(torch.utils._pytree.tree_leaves(other), torch.utils._pytree.tree_leaves(_run(fresh, SIZE))):
        assert torch.equal(a, b)
    for a, b in zip(torch.utils._pytree.tree_leaves(first), torch.utils._pytree.tree_leaves(_run(net))):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "dims,window",
    [
        ((8, 8, 8), (4, 4, 4)),
        ((16, 8, 12), (4, 4, 4)),
        ((4, 8, 8), (4, 4, 4)),
        ((2, 2, 3), (2, 2, 3)),
        ((6, 4, 3), (2, 4, 1)),
    ],
)
def test_window_tensors_in_the_graph_equal_the_cached_ones(dims, window):
    for shift in itertools.product(*[(0, w // 2) for w in window]):
        made = window_tensors(dims, window, shift)
        in_graph = window_tensors_in_graph(dims, window, shift, torch.device("cpu"), torch.float32)
        assert torch.equal(made.order, in_graph.order) and torch.equal(made.inverse, in_graph.inverse)
        assert torch.equal(made.order[made.inverse], torch.arange(made.order.numel()))
        if any(shift):
            assert made.mask.dtype == in_graph.mask.dtype == torch.float32
            assert torch.equal(made.mask, in_graph.mask)
        else:
            assert made.mask is None and in_graph.mask is None


def test_plain_op_attention_is_the_same_attention():
    net = _net()
    fused = _run(net)
    for module in net.modules():
        if isinstance(module, window_attention.WindowAttention):
            module.fused_attn = False
    plain = _run(net)
    for a, b in zip(torch.utils._pytree.tree_leaves(fused), torch.utils._pytree.tree_leaves(plain)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_the_encoder_compiles_as_one_graph_and_keeps_no_window_state():
    """Dynamo (``backend="eager"``: no code generation) traces the trunk, shifted blocks, a padded grid and a clipped
    window included, without a graph break (``fullgraph``) and matches eager; a second call does not recompile
    (before, the cached window tensors broke the graph in every block and recompiled it per block)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = _net()
    x = torch.randn(1, 1, *SIZE)
    compiled = torch.compile(net.forward_features, backend="eager", fullgraph=True)
    with torch.no_grad():
        eager = net.forward_features(x)
        assert all(len(cache) for cache in _caches(net))
        for cache in _caches(net):
            cache.clear()
        for _ in range(2):
            for a, b in zip(eager, compiled(x)):
                assert torch.equal(a, b)
    assert counters["stats"]["unique_graphs"] == 1
    assert all(len(cache) == 0 for cache in _caches(net))  # compiled code computes them in the graph
    torch._dynamo.reset()
