"""Integer-only membrane quantizer (SpQuant §4.2.1) and its SGS gradient."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from snncompress.errors import ConfigError
from snncompress.quant import MembraneQuantizer, fused, parse_membrane_quant
from snncompress.quant.sgs import sgs_surrogate_exact, sgs_table


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- levels -----------------------------------------------------------------------------------


def test_ternary_levels_and_bits():
    q = MembraneQuantizer.ternary()
    assert (q.levels_low, q.levels_high, q.bits, q.num_levels) == (-1, 1, 2, 3)
    assert q.information_bits == pytest.approx(1.585, abs=1e-3)
    u = t([-5.0, -0.6, -0.5, -0.4, 0.4, 0.5, 0.6, 1.4, 3.0])
    # round half to even: -0.5 -> 0, 0.5 -> 0
    assert q.quantize(u).tolist() == [-1, -1, 0, 0, 0, 0, 1, 1, 1]
    assert q.codes(u).dtype == torch.int8


def test_k_bit_levels_and_clip():
    q4 = MembraneQuantizer.from_bits(4)
    assert (q4.levels_low, q4.levels_high, q4.bits) == (-8, 7, 4)
    assert q4.quantize(t([-20.0, -7.6, 3.3, 9.0])).tolist() == [-8, -8, 3, 7]
    clipped = MembraneQuantizer.from_bits(4, clip=-3.0)
    assert (clipped.levels_low, clipped.levels_high, clipped.describe()) == (-3, 7, "int4[-3..7]")
    assert clipped.quantize(t([-20.0, -2.6])).tolist() == [-3, -3]
    spquant = MembraneQuantizer.from_bits(2, top=1)
    assert (spquant.levels_low, spquant.levels_high) == (-2, 1)
    assert MembraneQuantizer.from_bits(4, top=1).levels_low == -14


@pytest.mark.parametrize("clip", [-9, 0, 1, -2.5, math.nan, "x"])
def test_clip_outside_levels_is_refused(clip):
    with pytest.raises(ConfigError):
        MembraneQuantizer.from_bits(4, clip=clip)


def test_bad_bits_and_levels():
    for bits in (1, 17, 2.0):
        with pytest.raises(ConfigError):
            MembraneQuantizer.from_bits(bits)
    with pytest.raises(ValueError):
        MembraneQuantizer(levels_low=0, levels_high=0)


def test_threshold_scales_the_grid():
    q = MembraneQuantizer.from_bits(3)
    u = t([0.9, -1.3, 7.0, -30.0])
    assert q.quantize(u, 0.5).tolist() == [1.0, -1.5, 1.5, -2.0]  # levels -4..3 in units of 0.5
    per_neuron = t([0.5, 1.0, 2.0, 0.25])
    assert q.quantize(u, per_neuron).tolist() == [1.0, -1.0, 6.0, -1.0]
    assert q.codes(u, per_neuron).tolist() == [2, -1, 3, -4]
    assert torch.equal(q.dequantize(q.codes(u, 0.5), 0.5), q.quantize(u, 0.5))
    assert q.quantize(u, torch.tensor(0.5)).tolist() == [1.0, -1.5, 1.5, -2.0]
    with pytest.raises(ConfigError, match="positive"):
        q.quantize(u, 0.0)


def test_round_trip_and_parse():
    q = MembraneQuantizer.from_bits(4, clip=-2, smoothness=0.3)
    assert MembraneQuantizer.from_dict(q.to_dict()) == q
    with pytest.raises(ConfigError, match="levels_high"):
        MembraneQuantizer.from_dict({"levels_low": -1})
    assert parse_membrane_quant("ternary") == MembraneQuantizer.ternary()
    assert parse_membrane_quant("int4", clip=-1) == MembraneQuantizer(levels_low=-1, levels_high=7)
    assert parse_membrane_quant("fp32") is None
    for text, match in [
        ("int1", "2 to 16 bits"),
        ("tern", "did you mean 'ternary'"),
        ("int4x", "did you mean"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_membrane_quant(text)
    with pytest.raises(ConfigError, match="ternary"):
        parse_membrane_quant("ternary", clip=-2)
    with pytest.raises(ConfigError, match="clip"):
        parse_membrane_quant("fp32", clip=-1)


# --- SGS gradient -----------------------------------------------------------------------------


def _probe_points(low: int, high: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.cat(
        [
            torch.linspace(low - 25, high + 25, 10_001),
            torch.randn(5_000, generator=gen) * (high - low + 4),
            (torch.rand(5_000, generator=gen) - 0.5) * 4 + low,  # around the clip ends
            (torch.rand(5_000, generator=gen) - 0.5) * 4 + high,
        ]
    )


@pytest.mark.parametrize(
    "quantizer",
    [
        MembraneQuantizer.ternary(),
        MembraneQuantizer.from_bits(2),
        MembraneQuantizer.from_bits(4),
        MembraneQuantizer.from_bits(4, clip=-3, smoothness=0.2),
        MembraneQuantizer.from_bits(8),  # folded table
        MembraneQuantizer.from_bits(4, smoothness=0.05),  # folded table
        MembraneQuantizer.from_bits(3, smoothness=2.0),
    ],
    ids=lambda q: f"{q.describe()}-T{q.smoothness}",
)
def test_sgs_gradient_matches_the_full_sum(quantizer):
    low, high = quantizer.levels_low, quantizer.levels_high
    u = _probe_points(low, high).requires_grad_()
    upstream = torch.rand(u.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    quantizer.quantize(u).backward(upstream)
    exact = sgs_surrogate_exact(u, low, high, quantizer.smoothness)
    error = (u.grad.double() - upstream.double() * exact).abs() / upstream.double()
    bound = quantizer.max_surrogate_error
    assert float(error.max()) <= bound
    # the bound means something: far below the surrogate's own size (0.79 for ternary at T = 0.5)
    assert bound < 2e-3 * float(exact.max())


def test_sgs_default_values_at_known_points():
    # ternary, T = 0.5: G(0) = 2 * 2 * sigmoid'(1) = 4 * 0.196612 = 0.786448
    #                  G(0.5) = 2 * (sigmoid'(0) + sigmoid'(2)) = 2 * (0.25 + 0.104994)
    q = MembraneQuantizer.ternary()
    g = q.surrogate_gradient(t([0.0, 0.5, -0.5, 30.0]))
    expected = [0.786448, 2 * (0.25 + 0.104994), 2 * (0.25 + 0.104994), 0.0]
    assert g.tolist() == pytest.approx(expected, abs=2e-4)


def test_sgs_gradient_with_threshold():
    q = MembraneQuantizer.from_bits(4)
    u = (torch.randn(5000, generator=torch.Generator().manual_seed(2)) * 6).requires_grad_()
    q.quantize(u, 2.0).backward(torch.ones_like(u))
    exact = sgs_surrogate_exact(u / 2.0, -8, 7, 0.5)
    assert float((u.grad.double() - exact).abs().max()) <= q.max_surrogate_error * 1.01


def test_gradient_wrt_a_learnable_threshold():
    q = MembraneQuantizer.ternary()
    u = t([0.3, 0.8, -1.7, 2.5]).requires_grad_()
    thr = torch.tensor(1.25, requires_grad=True)
    out = q.quantize(u, thr)
    assert out.tolist() == [0.0, 1.25, -1.25, 1.25]
    out.sum().backward()
    t_ = u.detach() / 1.25
    exact = sgs_surrogate_exact(t_, -1, 1, 0.5)
    levels = torch.round(t_).clamp(-1, 1)
    expected_thr = float((levels - t_ * exact).sum())
    assert thr.grad.item() == pytest.approx(expected_thr, abs=1e-3)
    assert torch.allclose(u.grad.double(), exact, atol=2e-4)


def test_nan_membrane_gives_nan_gradient_not_an_error():
    u = t([0.2, math.nan, -0.4]).requires_grad_()
    MembraneQuantizer.ternary().quantize(u).sum().backward()
    assert math.isnan(u.grad[1].item()) and not math.isnan(u.grad[0].item())


def test_table_size_does_not_grow_with_levels():
    sizes = {bits: sgs_table(*_range(bits), 0.5).table.numel() for bits in (6, 8, 12, 16)}
    assert len(set(sizes.values())) == 1
    assert max(sizes.values()) <= 1 << 17


@contextlib.contextmanager
def one_torch_thread():
    """Run the block with one torch intra-op thread (the chunked and fused paths), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def test_codes_match_quantize_bit_for_bit():
    q = MembraneQuantizer.from_bits(4, clip=-3)
    u = torch.randn(10_000, generator=torch.Generator().manual_seed(3)) * 5
    u[:6] = t([-3.5, -2.5, 0.5, 1.5, 6.5, 7.5])  # ties: half to even in both paths
    for thr in (1.0, 0.5):
        codes = q.codes(u, thr)
        assert codes[:6].tolist() == ([-3, -2, 0, 2, 6, 7] if thr == 1.0 else [-3, -3, 1, 3, 7, 7])
        assert torch.equal(q.dequantize(codes, thr), q.quantize(u, thr))


def _largest_allocation(fn, n: int) -> int:
    from torch.profiler import ProfilerActivity, profile

    u = torch.randn(n).requires_grad_()
    fn(u).backward(torch.ones(n))  # warm-up: builds the SGS table outside the measurement
    u = torch.randn(n).requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(u).backward(torch.ones(n))
    return max(e.self_cpu_memory_usage for e in prof.events())


def test_no_allocation_grows_with_the_number_of_levels():
    n = 50_000
    for quantizer in (
        MembraneQuantizer.ternary(),
        MembraneQuantizer.from_bits(4),
        MembraneQuantizer.from_bits(12),
    ):
        assert _largest_allocation(quantizer.quantize, n) <= 4 * n  # one float32 tensor, never [levels, N]
    from snntorch.functional.quant import state_quant

    assert _largest_allocation(state_quant(num_bits=4), n) >= 16 * 4 * n  # the check can fail


@pytest.mark.parametrize("bits", [2, 8])  # direct and folded tables
def test_chunked_backward_equals_one_pass(bits, monkeypatch):
    import snncompress.quant.sgs as sgs

    quantizer = MembraneQuantizer.from_bits(bits)
    u = torch.randn(10_001, generator=torch.Generator().manual_seed(4)) * 2 ** (bits - 1)
    upstream = torch.rand(u.shape)
    # the torch path on both sides, numba or not (with one torch thread the numba kernel would take the
    # one-pass lookup, and it is within the table's error bound of the torch path, not bitwise equal)
    monkeypatch.setattr(fused, "_kernel", lambda: None)
    one_pass = quantizer.surrogate_table.lookup(u, 1.0, upstream)
    monkeypatch.setattr(sgs, "CHUNK", 1000)
    with one_torch_thread():
        chunked = quantizer.surrogate_table.lookup(u, 1.0, upstream)
    assert torch.equal(chunked, one_pass)


def test_float64_and_half_membranes():
    q = MembraneQuantizer.from_bits(4)
    u = (
        torch.randn(3000, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 5
    ).requires_grad_()
    out = q.quantize(u)
    assert out.dtype == torch.float64
    out.backward(torch.ones_like(u))
    exact = sgs_surrogate_exact(u, -8, 7, 0.5)
    assert float((u.grad - exact).abs().max()) <= q.max_surrogate_error
    half = u.detach().to(torch.bfloat16).requires_grad_()
    q.quantize(half).sum().backward()
    assert half.grad.dtype == torch.bfloat16
    assert float((half.grad.double() - sgs_surrogate_exact(half, -8, 7, 0.5)).abs().max()) < 1e-2


# -- the optional fused kernel (numba) ---------------------------------------------------------------

needs_numba = pytest.mark.skipif(
    not fused.available(),
    reason="fused kernels unavailable: numba not installed (pip install snncompress[fast]) or SNNCOMPRESS_NO_FUSED set")


def _one_thread_lookup(table, u, inv_threshold, upstream):
    with one_torch_thread():
        return table.lookup(u, inv_threshold, upstream)


@needs_numba
@pytest.mark.parametrize("quantizer", [MembraneQuantizer.ternary(), MembraneQuantizer.from_bits(4, clip=-3),
                                       MembraneQuantizer.from_bits(3, smoothness=2.0)],
                         ids=lambda q: f"{q.describe()}-T{q.smoothness}")
@pytest.mark.parametrize("inv_threshold", [1.0, 0.8, 2.5])
def test_fused_kernel_agrees_with_the_torch_path(quantizer, inv_threshold, monkeypatch):
    table = quantizer.surrogate_table
    assert not table.folded
    gen = torch.Generator().manual_seed(6)
    u = torch.randn(20_000, generator=gen) * (quantizer.levels_high + 3)
    edges = [k + 0.5 for k in range(quantizer.levels_low - 12, quantizer.levels_high + 12)]
    u[: len(edges)] = torch.tensor(edges) / inv_threshold  # level boundaries and the table's ends
    u[-4:] = t([math.nan, math.inf, -math.inf, 1e30])
    upstream = torch.rand(u.shape, generator=gen) - 0.5
    calls = []
    kernel = fused._kernel()
    monkeypatch.setattr(fused, "_kernel", lambda: calls.append(1) or kernel)
    with_kernel = _one_thread_lookup(table, u, inv_threshold, upstream)
    assert calls  # the kernel ran
    monkeypatch.setattr(fused, "_kernel", lambda: None)
    torch_path = _one_thread_lookup(table, u, inv_threshold, upstream)
    assert torch.equal(torch.isnan(with_kernel), torch.isnan(torch_path)) and bool(torch.isnan(with_kernel[-4]))
    assert torch.equal(with_kernel[-3:], torch_path[-3:])  # +-inf and huge: the table's ends
    # the same table entry but where the torch path's float32 index rounds across an entry edge
    differ = with_kernel.nan_to_num() != torch_path.nan_to_num()
    assert int(differ.sum()) <= 20
    exact = sgs_surrogate_exact(u[:-4] * inv_threshold, quantizer.levels_low, quantizer.levels_high,
                                quantizer.smoothness) * upstream[:-4].abs()
    for result in (with_kernel, torch_path):
        error = (result[:-4].double().abs() - exact).abs()  # |G * g| against |G_exact * g|, |g| <= 0.5
        assert float(error.max()) <= 0.5 * table.max_error


@needs_numba
@pytest.mark.parametrize("quantizer", [MembraneQuantizer.ternary(), MembraneQuantizer.from_bits(4, clip=-3),
                                       MembraneQuantizer.from_bits(8)], ids=lambda q: q.describe())
@pytest.mark.parametrize("threshold", [1.0, 0.37, 2.0])
def test_fused_forward_is_bitwise_the_torch_forward(quantizer, threshold, monkeypatch):
    gen = torch.Generator().manual_seed(8)
    u = torch.randn(20_000, generator=gen) * (quantizer.levels_high + 2) * threshold
    ties = torch.arange(quantizer.levels_low - 2, quantizer.levels_high + 2) + 0.5  # half to even
    u[: len(ties)] = ties * threshold
    u[-5:] = t([math.nan, math.inf, -math.inf, -0.0, 1e30])
    calls = []
    kernels = fused._kernel()
    monkeypatch.setattr(fused, "_kernel", lambda: calls.append(1) or kernels)
    with one_torch_thread():
        with_kernel = quantizer.quantize(u, threshold)
        assert calls
        monkeypatch.setattr(fused, "_kernel", lambda: None)
        torch_path = quantizer.quantize(u, threshold)
    assert torch.equal(torch.isnan(with_kernel), torch.isnan(torch_path)) and bool(torch.isnan(with_kernel[-5]))
    assert torch.equal(with_kernel.nan_to_num(), torch_path.nan_to_num())
    codes = quantizer.codes(u[:-5], threshold)
    assert torch.equal(with_kernel[:-5], quantizer.dequantize(codes, threshold))


@needs_numba
def test_fused_kernel_backward_through_quantize():
    q = MembraneQuantizer.ternary()
    u = (torch.randn(5000, generator=torch.Generator().manual_seed(7)) * 2).requires_grad_()
    upstream = torch.rand(u.shape)
    with one_torch_thread():
        q.quantize(u, 0.5).backward(upstream)
    exact = sgs_surrogate_exact(u.detach() / 0.5, -1, 1, 0.5)
    assert float((u.grad.double() - upstream * exact).abs().max()) <= q.max_surrogate_error


def test_fused_kernel_declines_what_it_does_not_handle():
    table = MembraneQuantizer.ternary().surrogate_table.table
    u = torch.randn(64, 2)
    args = (table, 2048.0, 22528.5)
    assert fused.gather_times_grad(u.t(), torch.ones(2, 64), *args) is None  # not contiguous
    assert fused.gather_times_grad(u.double(), torch.ones(64, 2, dtype=torch.float64), *args) is None
    assert fused.gather_times_grad(u, torch.ones(64, 1), *args) is None  # a broadcast gradient
    if fused.available():
        assert fused.gather_times_grad(u, torch.ones(64, 2), *args) is not None


def test_the_kernel_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SNNCOMPRESS_NO_FUSED", "1")
    fused._kernel.cache_clear()
    try:
        assert not fused.available()
    finally:
        monkeypatch.delenv("SNNCOMPRESS_NO_FUSED")
        fused._kernel.cache_clear()
