"""Tiny model descriptions whose memory, ops and energy the tests compute by hand."""

from __future__ import annotations

from snncompress.hardware import ModelDescription, NeuronLayer, SynapticLayer

T = 4


def linear(**kw) -> SynapticLayer:
    """Linear 4->3 fed spikes: 12 weights, dense_ops_per_step = 3 outputs * 4 fan_in = 12."""
    args = dict(
        name="fc1",
        kind="linear",
        weight_shape=(3, 4),
        dense_ops_per_step=12,
        time_steps=T,
        input_spikes_per_sample=5,
        fan_out=3,
    )
    args.update(kw)
    return SynapticLayer(**args)


def leaky(**kw) -> NeuronLayer:
    """Leaky, 3 neurons, beta 0.5 (a shift), threshold + beta per layer at fp32."""
    args = dict(name="lif1", neuron_type="Leaky", neurons=3, time_steps=T, beta=0.5, spikes_per_sample=2)
    args.update(kw)
    return NeuronLayer(**args)


def model(*layers, name: str = "tiny", accuracy: float | None = None) -> ModelDescription:
    return ModelDescription(
        name=name, time_steps=layers[0].time_steps, layers=tuple(layers), accuracy=accuracy
    )


def linear_fp32() -> ModelDescription:
    """Linear 4->3 (+bias) + Leaky, all fp32, 5 input spikes per sample."""
    return model(linear(has_bias=True), leaky())


def linear_quant(accuracy: float | None = 0.915) -> ModelDescription:
    """Linear 4->3 with pot4 weights and a PoT exponent per channel + Leaky with a ternary membrane."""
    return model(
        linear(weight_bits=4, weight_scheme="pot4", scale_count=3, scale_bits=8, scale_is_power_of_two=True),
        leaky(membrane_bits=2, membrane_scheme="ternary", param_bits=8),
        name="quant",
        accuracy=accuracy,
    )


def linear_fp32_nobias(accuracy: float | None = 0.92) -> ModelDescription:
    """The baseline of :func:`linear_quant`."""
    return model(linear(), leaky(), name="fp32", accuracy=accuracy)


def conv_fp32() -> ModelDescription:
    """Conv2d 1->2 k3 on a real-valued 1x4x4 input (no padding: 2x2x2 = 8 outputs, fan_in 9), T = 2,
    + Leaky with beta 0.9 (not a power of two: the leak is a multiply)."""
    conv = SynapticLayer(
        name="conv1",
        kind="conv2d",
        weight_shape=(2, 1, 3, 3),
        dense_ops_per_step=8 * 9,
        time_steps=2,
        input_is_spikes=False,
    )
    lif = NeuronLayer(name="lif1", neuron_type="Leaky", neurons=8, time_steps=2, beta=0.9)
    return model(conv, lif, name="conv")
