"""Memory footprint in bits (SpQuant Eq. 29; tinySNN Eq. 4), per layer and in total.

    M = w_p * N_w + u_p * N_neurons + s_p * N_spikes           (SpQuant Eq. 29, s_p = 1)
    M = N_w * B_w + sum_k N_n,k * B_n,k                        (tinySNN Eq. 4, neuron parameters)

Our reading, category by category:
- weights: at the stored width; pruned layers in the smallest of dense / bitmap / CSR (or a fixed
  format from the config), the sparse index counted under ``index``;
- bias, per-channel scales/exponents, masks, gate parameters: as stored;
- neuron parameters (threshold, beta, ...): ``param_count * param_bits`` (tinySNN's N_n,k * B_n,k);
- membrane: every state variable of every neuron at the membrane width (Synaptic: syn + mem);
- spikes: one time step of output spikes buffered, 1 bit per neuron (s_p = 1);
- recurrent weights of RLeaky/RSynaptic: dense, under ``weights``.
Everything is per sample (batch 1). Input data (the sensor frame) is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from snncompress.hardware.config import CostModelConfig, SparseFormat
from snncompress.hardware.description import ModelDescription, NeuronLayer, SynapticLayer

MEMORY_CATEGORIES = (
    "weights",
    "index",
    "bias",
    "scales",
    "neuron_params",
    "membrane",
    "spikes",
    "masks",
    "gates",
)
_FORMAT_ORDER: tuple[SparseFormat, ...] = ("dense", "bitmap", "csr")  # ties go to the simpler format


@dataclass(frozen=True)
class MemoryBits:
    """Storage by category, in bits."""

    weights: int = 0
    index: int = 0
    bias: int = 0
    scales: int = 0
    neuron_params: int = 0
    membrane: int = 0
    spikes: int = 0
    masks: int = 0
    gates: int = 0

    @property
    def total(self) -> int:
        """All categories."""
        return sum(getattr(self, f.name) for f in fields(self))

    @property
    def parameters(self) -> int:
        """Static storage (everything but membrane state and spikes): compare with NeuroBench Footprint."""
        return self.total - self.membrane - self.spikes

    def __add__(self, other: MemoryBits) -> MemoryBits:
        return MemoryBits(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class LayerMemory:
    """Memory of one layer.

    Attributes:
        name: Layer name.
        bits: Storage by category.
        sparse_format: Weight storage format (None for neuron layers).
        format_bits: Weight + index bits of every format considered (pruned layers only).
        dense_weight_bits: The same weights unpruned and dense at the same width (synaptic layers).
    """

    name: str
    bits: MemoryBits
    sparse_format: SparseFormat | None = None
    format_bits: dict[str, int] | None = None
    dense_weight_bits: int | None = None

    @property
    def pruning_raised_memory(self) -> bool:
        """True when the stored weights + index exceed the unpruned dense weights (Schaefer et al.)."""
        if self.dense_weight_bits is None:
            return False
        return self.bits.weights + self.bits.index > self.dense_weight_bits


def ceil_log2(n: int) -> int:
    """Bits to address ``n`` distinct values (at least 1)."""
    return max(1, (n - 1).bit_length())


def csr_index_bits(layer: SynapticLayer) -> int:
    """CSR index bits of the [rows, fan_in] weight matrix: a column index per nonzero + rows+1 pointers.

    Column index width = ceil(log2(fan_in)); row pointer width = ceil(log2(nonzero + 1)).
    """
    return layer.nonzero * ceil_log2(layer.fan_in) + (layer.rows + 1) * ceil_log2(layer.nonzero + 1)


def format_storage(layer: SynapticLayer) -> dict[SparseFormat, tuple[int, int]]:
    """(weight bits, index bits) of the layer in each storage format.

    dense: every weight at its width, zeros included; bitmap: nonzeros + 1 bit per weight;
    CSR: nonzeros + :func:`csr_index_bits`.
    """
    b = layer.weight_bits
    packed = layer.nonzero * b
    return {
        "dense": (layer.weight_count * b, 0),
        "bitmap": (packed, layer.weight_count),
        "csr": (packed, csr_index_bits(layer)),
    }


def choose_format(layer: SynapticLayer, config: CostModelConfig) -> SparseFormat:
    """The format the layer's weights are stored in: dense when unpruned, else the config's choice."""
    if layer.nonzero == layer.weight_count:
        return "dense"
    if config.sparse_format != "auto":
        return config.sparse_format
    storage = format_storage(layer)
    return min(_FORMAT_ORDER, key=lambda f: (sum(storage[f]), _FORMAT_ORDER.index(f)))


def synaptic_memory(layer: SynapticLayer, config: CostModelConfig) -> LayerMemory:
    """Memory of a synaptic layer: SpQuant Eq. 29 weight term plus index, bias, scales, masks, gates."""
    fmt = choose_format(layer, config)
    storage = format_storage(layer)
    weights, index = storage[fmt]
    bits = MemoryBits(
        weights=weights,
        index=index,
        bias=layer.rows * layer.bias_bits if layer.has_bias else 0,
        scales=layer.scale_count * layer.scale_bits,
        masks=layer.mask_bits,
        gates=layer.gate_params * layer.gate_param_bits,
    )
    pruned = layer.nonzero < layer.weight_count
    return LayerMemory(
        name=layer.name,
        bits=bits,
        sparse_format=fmt,
        format_bits={f: sum(v) for f, v in storage.items()} if pruned else None,
        dense_weight_bits=storage["dense"][0],
    )


def neuron_memory(layer: NeuronLayer) -> LayerMemory:
    """Memory of a neuron layer (SpQuant Eq. 29 membrane and spike terms; tinySNN Eq. 4 parameters)."""
    bits = MemoryBits(
        weights=layer.recurrent_weights * layer.recurrent_weight_bits,
        neuron_params=layer.param_count * layer.param_bits,
        membrane=layer.neurons * layer.state_variables * layer.membrane_bits,
        spikes=layer.neurons,
    )
    return LayerMemory(name=layer.name, bits=bits)


def layer_memory(layer: SynapticLayer | NeuronLayer, config: CostModelConfig) -> LayerMemory:
    """Memory of any layer."""
    if isinstance(layer, SynapticLayer):
        return synaptic_memory(layer, config)
    return neuron_memory(layer)


def model_memory(desc: ModelDescription, config: CostModelConfig | None = None) -> list[LayerMemory]:
    """Memory of every layer, in order; sum ``.bits`` for the total (SpQuant Eq. 29 M_total)."""
    config = config or CostModelConfig()
    return [layer_memory(layer, config) for layer in desc.layers]


def total_bits(layers: list[LayerMemory]) -> MemoryBits:
    """Sum of the layers' storage."""
    out = MemoryBits()
    for lm in layers:
        out = out + lm.bits
    return out
