"""Tiny snnTorch models for the tests, in one place (torchao ``testing/model_architectures.py``).

Every factory is importable as ``tests.models:NAME`` (the ``conftest.py`` puts the repository root on
``sys.path`` and on ``PYTHONPATH``), builds the same weights every time (its own seeded generator; the
global RNG is left alone) and is scaled so that every neuron layer fires on ``example_inputs()``.

``TINY_MODELS`` describes each supported model: how to build it and an ``example_inputs()`` batch.
``UNSUPPORTED`` lists models that hold a layer snncompress must refuse, with the name it must give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import snntorch as snn
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

T = 3  # time steps the tests present static inputs for
BATCH = 4
CLASSES = 4


def _init(model: nn.Module, seed: int, gain: float = 1.0) -> nn.Module:
    """Re-draw every weight/bias from a seeded generator so the factory is deterministic and fires."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 0.85) * gain * 1.5 / fan_in**0.5)
            elif name.endswith("bias"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.2)
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=gen) * 0.2)
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.rand(n, generator=gen))
                module.num_batches_tracked.fill_(7)
    model.eval()
    return model


def _lif(**kw) -> snn.Leaky:
    return snn.Leaky(beta=kw.pop("beta", 0.5), init_hidden=True, **kw)


# -- stepwise Sequentials (init_hidden=True, the runner drives time) ---------------------------------

def leaky_mlp() -> nn.Sequential:
    """Linear(8->12) - Leaky - Linear(12->4) - Leaky(output): the plainest stepwise model."""
    model = nn.Sequential(nn.Linear(8, 12), _lif(), nn.Linear(12, CLASSES), _lif(output=True))
    return _init(model, seed=1, gain=2.0)


def synaptic_mlp() -> nn.Sequential:
    """Linear - Synaptic - Linear - Synaptic(output), returning (spk, syn, mem)."""
    return _init(nn.Sequential(
        nn.Linear(8, 12), snn.Synaptic(alpha=0.6, beta=0.5, init_hidden=True),
        nn.Linear(12, CLASSES), snn.Synaptic(alpha=0.5, beta=0.6, init_hidden=True, output=True),
    ), seed=2, gain=1.5)


def rleaky_mlp() -> nn.Sequential:
    """Linear - RLeaky (all-to-all recurrent Linear 12->12) - Linear - RLeaky (one-to-one V) (output)."""
    return _init(nn.Sequential(
        nn.Linear(8, 12), snn.RLeaky(beta=0.5, linear_features=12, init_hidden=True),
        nn.Linear(12, CLASSES),
        snn.RLeaky(beta=0.5, V=0.3, all_to_all=False, init_hidden=True, output=True),
    ), seed=3, gain=1.8)


def subtract_reset_mlp() -> nn.Sequential:
    """Per-neuron learnable beta and threshold, reset by subtraction."""
    return _init(nn.Sequential(
        nn.Linear(8, 12),
        _lif(beta=torch.linspace(0.3, 0.9, 12), threshold=torch.full((12,), 0.8), learn_beta=True,
             learn_threshold=True, reset_mechanism="subtract"),
        nn.Linear(12, CLASSES), _lif(output=True, reset_mechanism="subtract"),
    ), seed=4)


def zero_reset_mlp() -> nn.Sequential:
    """Reset to zero, a lower threshold, a fast-sigmoid surrogate."""
    return _init(nn.Sequential(
        nn.Linear(8, 12),
        _lif(beta=0.75, threshold=0.6, reset_mechanism="zero", spike_grad=snn.surrogate.fast_sigmoid()),
        nn.Linear(12, CLASSES), _lif(output=True, reset_mechanism="zero"),
    ), seed=5)


def conv2d_net() -> nn.Sequential:
    """[B,1,8,8]: Conv2d-BatchNorm2d-Leaky-MaxPool-Dropout-Conv2d-Leaky-AvgPool-Flatten-Linear-Leaky."""
    return _init(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), _lif(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(4, 4, 3, padding=1), _lif(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16, CLASSES), _lif(output=True),
    ), seed=6, gain=1.5)


def conv1d_net() -> nn.Sequential:
    """[B,2,12]: Conv1d(k3)-BatchNorm1d-Leaky-MaxPool1d-Flatten-Linear-Leaky (a nested Sequential head)."""
    return _init(nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), _lif(), nn.MaxPool1d(2), nn.Flatten(),
        nn.Sequential(nn.Linear(20, CLASSES), _lif(output=True)),
    ), seed=7, gain=1.5)


def rsynaptic_mlp() -> nn.Sequential:
    """Linear - RSynaptic (all-to-all recurrent Linear 12->12) - Linear - RSynaptic (one-to-one V) (output)."""
    return _init(nn.Sequential(
        nn.Linear(8, 12), snn.RSynaptic(alpha=0.6, beta=0.5, linear_features=12, init_hidden=True),
        nn.Linear(12, CLASSES),
        snn.RSynaptic(alpha=0.5, beta=0.6, V=0.3, all_to_all=False, init_hidden=True, output=True),
    ), seed=17, gain=1.5)


def lapicque_mlp() -> nn.Sequential:
    """Linear - Lapicque(beta=0.9) - Linear - Lapicque(R=5, C=0.8) (output): snnTorch's two ways
    to give the RC circuit (its leak is 1 - dt/(RC), its input gain dt/C); reset by subtraction."""
    return _init(nn.Sequential(
        nn.Linear(8, 12), snn.Lapicque(beta=0.9, init_hidden=True),
        nn.Linear(12, CLASSES), snn.Lapicque(R=5.0, C=0.8, init_hidden=True, output=True),
    ), seed=15, gain=5.0)


def alpha_mlp() -> nn.Sequential:
    """snnTorch's own Sequential example for ``Alpha``: Linear - Alpha(0.9, 0.8) - Linear - Alpha (output)."""
    return _init(nn.Sequential(
        nn.Linear(8, 12), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
        nn.Linear(12, CLASSES), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True, output=True),
    ), seed=16, gain=10.0)


# -- a user module with explicit states and its own time loop (snnTorch tutorial 5 style) -------------

class TutorialNet(nn.Module):
    """fc1 - lif1 - fc2 - lif2 with explicit membranes; ``forward(x)`` loops ``num_steps`` over a static
    ``[B, 8]`` input and returns ``torch.stack(spk_rec), torch.stack(mem_rec)``, each ``[T, B, 4]``."""

    def __init__(self, num_steps: int = T):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(8, 12)
        self.lif1 = snn.Leaky(beta=0.5)
        self.fc2 = nn.Linear(12, CLASSES)
        self.lif2 = snn.Leaky(beta=0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial_net() -> TutorialNet:
    return _init(TutorialNet(), seed=8, gain=2.5)


class TutorialSequenceNet(nn.Module):
    """Explicit-state Synaptic network over event frames: ``forward(x)`` takes ``[T, B, 8]`` and loops
    over ``x.shape[0]``."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 12)
        self.syn1 = snn.Synaptic(alpha=0.5, beta=0.5)
        self.fc2 = nn.Linear(12, CLASSES)
        self.lif2 = snn.Leaky(beta=0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        syn1, mem1 = self.syn1.init_synaptic()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for t in range(x.shape[0]):
            spk1, syn1, mem1 = self.syn1(self.fc1(x[t]), syn1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial_sequence_net() -> TutorialSequenceNet:
    return _init(TutorialSequenceNet(), seed=9, gain=2.0)


# -- models snncompress must refuse -------------------------------------------------------------------

def lstm_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 12), _lif(), nn.LSTM(12, CLASSES))


def leaky_parallel_net() -> nn.Sequential:
    """snnTorch's LeakyParallel (an nn.RNN inside) is refused by its own name."""
    return nn.Sequential(nn.Linear(8, 12), snn.LeakyParallel(input_size=12, hidden_size=CLASSES))


def no_neuron_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, CLASSES))


def not_a_module() -> str:
    return "a string"


def failing_factory() -> nn.Module:
    raise ValueError("checkpoint layout changed\nsecond line")


def atan_surrogate(x: torch.Tensor) -> torch.Tensor:
    """snnTorch's arctan surrogate (alpha 2) as a module-level function: ``surrogate.atan()`` is a closure,
    which ``torch.save(model)`` cannot pickle."""
    return snn.surrogate.ATan.apply(x, 2.0)


def picklable(model: nn.Module) -> nn.Module:
    """The same model (same forward values) with a surrogate ``torch.save`` can pickle."""
    for module in model.modules():
        if isinstance(module, snn.SpikingNeuron):
            module.spike_grad = atan_surrogate
    return model


# -- the catalogue ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TinyModel:
    """A tiny model and the inputs it runs on.

    Attributes:
        name: the factory's name (``tests.models:<name>``).
        build: the factory.
        input_shape: one sample, without the batch dim (with time first for sequences).
        style: ``stepwise`` or ``sequence``.
        neuron_types: the neuron classes it holds, in order.
        is_sequence: the input carries time (``[B, T, ...]``).
        user_module: a stepwise user module (``forward(x)`` one time step), not an ``nn.Sequential``.
    """

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    style: str
    neuron_types: tuple[str, ...]
    is_sequence: bool = False
    user_module: bool = False

    @property
    def ref(self) -> str:
        return f"tests.models:{self.name}"

    def example_inputs(self, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
        """A batch in [0, 1] (spikes for a sequence model), ``[B, *input_shape]``."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand((batch, *self.input_shape), generator=gen)
        return (x < 0.5).float() if self.is_sequence else x


TINY_MODELS: dict[str, TinyModel] = {m.name: m for m in (
    TinyModel("leaky_mlp", leaky_mlp, (8,), "stepwise", ("Leaky", "Leaky")),
    TinyModel("synaptic_mlp", synaptic_mlp, (8,), "stepwise", ("Synaptic", "Synaptic")),
    TinyModel("rleaky_mlp", rleaky_mlp, (8,), "stepwise", ("RLeaky", "RLeaky")),
    TinyModel("subtract_reset_mlp", subtract_reset_mlp, (8,), "stepwise", ("Leaky", "Leaky")),
    TinyModel("zero_reset_mlp", zero_reset_mlp, (8,), "stepwise", ("Leaky", "Leaky")),
    TinyModel("conv2d_net", conv2d_net, (1, 8, 8), "stepwise", ("Leaky", "Leaky", "Leaky")),
    TinyModel("conv1d_net", conv1d_net, (2, 12), "stepwise", ("Leaky", "Leaky")),
    TinyModel("rsynaptic_mlp", rsynaptic_mlp, (8,), "stepwise", ("RSynaptic", "RSynaptic")),
    TinyModel("lapicque_mlp", lapicque_mlp, (8,), "stepwise", ("Lapicque", "Lapicque")),
    TinyModel("alpha_mlp", alpha_mlp, (8,), "stepwise", ("Alpha", "Alpha")),
    TinyModel("tutorial_net", tutorial_net, (8,), "sequence", ("Leaky", "Leaky")),
    TinyModel("tutorial_sequence_net", tutorial_sequence_net, (T, 8), "sequence", ("Synaptic", "Leaky"),
              is_sequence=True),
    TinyModel("one_step_conv_net", lambda: one_step_conv_net(), (T, 2, 8, 8), "stepwise", ("Leaky",) * 3,
              is_sequence=True, user_module=True),
)}
SEQUENTIAL_MODELS = [name for name, m in TINY_MODELS.items() if m.style == "stepwise" and not m.user_module]
# neurons whose membrane is computed afresh every step (no stored membrane to quantize)
NO_STORED_MEMBRANE_MODELS = ["alpha_mlp"]

# factory -> the layer name and type the error must mention
UNSUPPORTED: dict[str, tuple[str, str]] = {
    "lstm_net": ("2", "LSTM"),
    "leaky_parallel_net": ("1", "LeakyParallel"),
}


def example_inputs(name: str, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    return TINY_MODELS[name].example_inputs(batch, seed)


def tiny_bundle(name: str, n: int = 8, seed: int = 0, cls=None, labelled: bool = True):
    """``n`` example inputs of tiny model ``name`` with labels 0..3, batches of 4, T steps (a DataBundle);
    ``labelled`` False: unlabelled (every label ``NO_LABEL``, as a tensor file with only ``x`` loads)."""
    from snncompress.data.loading import NO_LABEL, DataBundle, DataOptions

    model = TINY_MODELS[name]
    x, y = model.example_inputs(n, seed), torch.arange(n) % CLASSES
    if not labelled:
        y = torch.full((n,), NO_LABEL)
    return (cls or DataBundle)(f"{name}:{seed}", TensorDataset(x, y), model.is_sequence, T,
                               CLASSES if labelled else None, DataOptions(time_steps=T, batch_size=4, seed=seed),
                               labelled=labelled)


# -- data sources for ``--data package.module:function`` ----------------------------------------------

def _static_tensors(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return torch.rand(n, 8, generator=gen), torch.arange(n) % CLASSES


def static_dataset() -> TensorDataset:
    """10 static ``[8]`` samples, labels 0..3."""
    return TensorDataset(*_static_tensors())


def empty_dataset() -> TensorDataset:
    """No samples at all (a data function that found nothing)."""
    return TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.int64))


def static_images() -> TensorDataset:
    """8 static ``[1, 8, 8]`` images on a 1/16 grid (like the digits: integer-only inputs), labels 0..3."""
    gen = torch.Generator().manual_seed(12)
    return TensorDataset(torch.randint(0, 17, (8, 1, 8, 8), generator=gen) / 16, torch.arange(8) % CLASSES)


class _XOnly(torch.utils.data.Dataset):
    """Items are ``x`` tensors alone (``pairs`` False) or one-element tuples ``(x,)``; ``mixed``: item 1 is a pair."""

    def __init__(self, x: torch.Tensor, wrap: bool = False, mixed: bool = False):
        self.x, self.wrap, self.mixed = x, wrap, mixed

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        if self.mixed and i == 1:
            return self.x[i], 0
        return (self.x[i],) if self.wrap else self.x[i]


def unlabelled_dataset() -> torch.utils.data.Dataset:
    """The 10 samples of ``static_dataset`` without labels: each item is ``x`` alone."""
    return _XOnly(_static_tensors()[0])


def unlabelled_tuples() -> torch.utils.data.Dataset:
    """The same, each item a one-element tuple ``(x,)``."""
    return _XOnly(_static_tensors()[0], wrap=True)


def half_labelled_dataset() -> torch.utils.data.Dataset:
    """x alone except for item 1, an ``(x, y)`` pair: an inconsistent data set."""
    return _XOnly(_static_tensors()[0], mixed=True)


def static_loader() -> DataLoader:
    return DataLoader(static_dataset(), batch_size=3)


def not_a_dataset() -> list[int]:
    return [1, 2, 3]


def failing_dataset() -> TensorDataset:
    raise FileNotFoundError("raw/ folder missing")


# -- models whose own code fails while running (the error must name the layer) -----------------------

class BrokenStepNet(TutorialNet):
    """Tutorial style with a bug in the loop: ``lif2`` is called with a stray third argument."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2, "stray")
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def broken_step_net() -> BrokenStepNet:
    return _init(BrokenStepNet(), seed=8, gain=2.5)


class BrokenForwardNet(TutorialNet):
    """Tutorial style whose own forward raises (a config lookup that is not there)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = {"train": self.num_steps}["eval"]
        return super().forward(x[:steps])


def broken_forward_net() -> BrokenForwardNet:
    return _init(BrokenForwardNet(), seed=8, gain=2.5)


class OneStepNet(nn.Module):
    """snnTorch tutorial 6's class ``Net``: ``forward(x)`` initialises the membranes and runs ONE step,
    returning ``spk, mem`` of shape ``[B, 4]`` (no time loop), with functional pooling and a ``view``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.5)
        self.fc1 = nn.Linear(4 * 4 * 4, CLASSES)
        self.lif2 = snn.Leaky(beta=0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        cur1 = torch.nn.functional.max_pool2d(self.conv1(x), 2)
        spk1, mem1 = self.lif1(cur1, mem1)
        cur2 = self.fc1(spk1.view(x.shape[0], -1))
        spk2, mem2 = self.lif2(cur2, mem2)
        return spk2, mem2


def one_step_net() -> OneStepNet:
    return _init(OneStepNet(), seed=12, gain=2.0)


class TutorialConvNet(nn.Module):
    """A convolutional network written with a time loop (snnTorch tutorial 6's layers): Conv2d - Leaky -
    MaxPool2d module - ``view(batch, -1)`` - Linear - Leaky over a static ``[B, 1, 8, 8]`` input. ``functional_pool``
    pools with ``F.max_pool2d`` instead (which breaks the chain of modules), ``scale`` multiplies the
    hidden spikes in forward (which too)."""

    def __init__(self, functional_pool: bool = False, scale: float | None = None):
        super().__init__()
        self.functional_pool, self.scale = functional_pool, scale
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.lif1 = snn.Leaky(beta=0.5)
        self.fc1 = nn.Linear(4 * 4 * 4, CLASSES)
        self.lif2 = snn.Leaky(beta=0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(T):
            spk1, mem1 = self.lif1(self.conv1(x), mem1)
            pooled = torch.nn.functional.max_pool2d(spk1, 2) if self.functional_pool else self.pool1(spk1)
            hidden = pooled.view(x.shape[0], -1)
            spk2, mem2 = self.lif2(self.fc1(hidden * self.scale if self.scale else hidden), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial_conv_net() -> TutorialConvNet:
    return _init(TutorialConvNet(), seed=13, gain=2.5)


def functional_pool_net() -> TutorialConvNet:
    return _init(TutorialConvNet(functional_pool=True), seed=13, gain=2.5)


def scaled_spikes_net() -> TutorialConvNet:
    return _init(TutorialConvNet(scale=2.0), seed=13, gain=2.5)


# -- snnTorch's regression tutorial (part II) style: recurrent LIF with its own time loop ---------------

class TutorialRLeakyNet(nn.Module):
    """fc1 - RLeaky(linear_features=12) - fc2 - RLeaky(linear_features=4) with explicit spikes and membranes
    (``init_rleaky``), looping ``num_steps`` over a static ``[B, 8]`` input; not in ``TINY_MODELS``."""

    def __init__(self, num_steps: int = T):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(8, 12)
        self.rlif1 = snn.RLeaky(beta=0.9, linear_features=12)
        self.fc2 = nn.Linear(12, CLASSES)
        self.rlif2 = snn.RLeaky(beta=0.9, linear_features=CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spk1, mem1 = self.rlif1.init_rleaky()
        spk2, mem2 = self.rlif2.init_rleaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.rlif1(self.fc1(x), spk1, mem1)
            spk2, mem2 = self.rlif2(self.fc2(spk1), spk2, mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial_rleaky_net() -> TutorialRLeakyNet:
    return _init(TutorialRLeakyNet(), seed=18, gain=2.5)


def learned_per_neuron_mlp() -> nn.Sequential:
    """The documentation's Sequential with per-neuron learned ``beta`` and ``threshold`` (subtract reset), some
    ``beta`` small enough that the reset ``Vth / beta`` overflows an int4 membrane; not in ``TINY_MODELS``."""
    return _init(nn.Sequential(
        nn.Linear(8, 12),
        snn.Leaky(beta=torch.linspace(0.05, 0.95, 12), learn_beta=True, threshold=torch.linspace(0.5, 1.5, 12),
                  learn_threshold=True, init_hidden=True),
        nn.Linear(12, CLASSES),
        snn.Leaky(beta=torch.full((CLASSES,), 0.6), learn_beta=True, threshold=torch.linspace(0.6, 1.2, CLASSES),
                  learn_threshold=True, init_hidden=True, output=True),
    ), seed=19, gain=2.0)


# -- snnTorch's tutorial 6 CSNN order: the pooling before the neuron layer ----------------------------

def pool_first_net() -> nn.Sequential:
    """[B,1,8,8]: Conv2d-MaxPool2d-Leaky-Conv2d-AvgPool2d-Leaky-Flatten-Linear-Leaky, each hidden neuron layer
    behind a non-overlapping pooling (snnTorch tutorial 6's Conv2d -> MaxPool2d -> Leaky); not in ``TINY_MODELS``."""
    return _init(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), _lif(),
        nn.Conv2d(4, 4, 3, padding=1), nn.AvgPool2d(2), _lif(),
        nn.Flatten(), nn.Linear(16, CLASSES), _lif(output=True),
    ), seed=20, gain=2.0)


def overlapping_pool_net() -> nn.Sequential:
    """[B,1,8,8]: Conv2d-MaxPool2d(3, stride 2, padding 1)-Leaky-Flatten-Linear-Leaky: overlapping pooling windows
    before the neuron layer; not in ``TINY_MODELS``."""
    return _init(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1), _lif(),
        nn.Flatten(), nn.Linear(64, CLASSES), _lif(output=True),
    ), seed=21, gain=2.0)


# -- models published for benchmarks (NeuroBench's examples), in small -----------------------------------

class OneStepConvNet(nn.Module):
    """NeuroBench's DVS-gesture CSNN (``examples/dvs_gesture/snn.py``) in small: ``forward(x)`` is ONE time step
    of ``init_hidden=True`` neurons and returns ``(spk, mem)`` of the output layer, the style NeuroBench's
    ``SNNTorchModel`` drives step by step. Conv2d(5x5, ``padding="same"``) - MaxPool2d - Leaky - Conv2d(4x4,
    ``padding="same"``: an even kernel, the odd zero padded after) - MaxPool2d - Leaky - ``flatten(1)`` - Linear -
    Dropout - Leaky, learned-looking betas and thresholds, atan surrogate; one step is ``[B, 2, 8, 8]``."""

    def __init__(self):
        super().__init__()
        from snntorch import surrogate

        grad = surrogate.atan()
        self.conv1 = nn.Conv2d(2, 4, 5, padding="same")
        self.pool1 = nn.MaxPool2d(2)
        self.lif1 = snn.Leaky(beta=0.9999903, threshold=1.6, spike_grad=grad, init_hidden=True)
        self.conv2 = nn.Conv2d(4, 4, 4, padding="same")
        self.pool2 = nn.MaxPool2d(2)
        self.lif2 = snn.Leaky(beta=0.7291118, threshold=0.9, spike_grad=grad, init_hidden=True)
        self.linear1 = nn.Linear(4 * 2 * 2, CLASSES)
        self.dropout_4 = nn.Dropout(0.5)
        self.lif4 = snn.Leaky(beta=0.8348242, threshold=0.364, spike_grad=grad, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spk1 = self.lif1(self.pool1(self.conv1(x)))
        spk2 = self.lif2(self.pool2(self.conv2(spk1)))
        spk4, mem4 = self.lif4(self.dropout_4(self.linear1(spk2.flatten(1))))
        return spk4, mem4


def one_step_conv_net() -> OneStepConvNet:
    return _init(OneStepConvNet(), seed=23, gain=1.0)


class OneStepMLP(nn.Module):
    """A one-step user module as benchmark suites write an MLP (NeuroBench's speech-command MLP as a module):
    fc1 - lif1 - fc2 - lif2 (output), ``init_hidden=True``, ``forward(x)`` one step returning ``(spk, mem)``;
    static ``[B, 8]`` input; not in ``TINY_MODELS``."""

    def __init__(self, reset_in_forward: bool = False):
        super().__init__()
        self.reset_in_forward = reset_in_forward
        self.fc1 = nn.Linear(8, 12)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc2 = nn.Linear(12, CLASSES)
        self.lif2 = snn.Leaky(beta=0.9, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reset_in_forward:  # forgets its state on every call: no time loop, and cannot be stepped either
            self.lif1.reset_mem()
            self.lif2.reset_mem()
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))


def one_step_mlp() -> OneStepMLP:
    return _init(OneStepMLP(), seed=24, gain=2.0)


def resetting_step_mlp() -> OneStepMLP:
    return _init(OneStepMLP(reset_in_forward=True), seed=24, gain=2.0)


class HarConvNet(nn.Module):
    """NeuroBench's NeHAR SCNN (``examples/nehar/SCNN.py``) in small: ``init_hidden=True`` neurons with tiny
    thresholds *and* its own loop over a ``[B, T, 3]`` series (``input[:, step]`` reshaped to ``[B, 3, 1]``),
    resetting them first, returning only ``torch.stack(spk_rec)``. Conv1d(k=2, padding=4) - MaxPool1d - Leaky -
    Conv1d(k=1) - MaxPool1d - Leaky - Flatten - Linear - Leaky(output)."""

    def __init__(self, num_steps: int = T):
        super().__init__()
        self.conv1 = nn.Conv1d(3, 6, 2, padding=4)
        self.max1 = nn.MaxPool1d(2)
        self.leaky1 = snn.Leaky(beta=0.4, init_hidden=True, threshold=0.02)
        self.conv2 = nn.Conv1d(6, 8, kernel_size=1)
        self.max2 = nn.MaxPool1d(2)
        self.leaky2 = snn.Leaky(beta=0.3, init_hidden=True, threshold=0.01)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(16, CLASSES)
        self.leaky3 = snn.Leaky(beta=0.5, output=True, init_hidden=True, threshold=0.01)
        self.num_steps = num_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.leaky1.init_leaky()
        self.leaky2.init_leaky()
        self.leaky3.init_leaky()
        spk_rec = []
        for step in range(self.num_steps):
            new_input = x[:, step, :]
            y = self.max1(self.conv1(new_input.reshape(new_input.shape[0], new_input.shape[1], 1)))
            y = self.max2(self.conv2(self.leaky1(y)))
            spk_out, _ = self.leaky3(self.linear(self.flatten(self.leaky2(y))))
            spk_rec.append(spk_out)
        return torch.stack(spk_rec)


def har_conv_net() -> HarConvNet:
    return _init(HarConvNet(), seed=25, gain=1.0)
