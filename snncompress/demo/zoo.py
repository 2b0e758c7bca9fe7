"""The built-in demo model: a small convolutional SNN for scikit-learn's 8x8 digits.

``digits_csnn()`` builds the architecture; ``pretrained_digits_csnn()`` loads the weights shipped
in the package (trained by ``train_digits_csnn``; retrain with ``python -m snncompress.demo.zoo``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import snntorch as snn
import torch
from torch import nn

DEMO_TIME_STEPS = 8
DEMO_BETA = 0.5  # SpQuant's tau = 0.5: the leak is a one-bit shift
WEIGHTS_FILE = "digits_csnn.safetensors"


def digits_csnn() -> nn.Sequential:
    """Conv(1->16) - LIF - MaxPool - Conv(16->32) - LIF - MaxPool - FC(128->64) - LIF - FC(64->10) - LIF."""
    def lif(output: bool = False) -> snn.Leaky:
        return snn.Leaky(beta=DEMO_BETA, init_hidden=True, output=output)

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), lif(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), lif(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 64), lif(),
        nn.Linear(64, 10), lif(output=True),
    )


def weights_path() -> Path:
    return Path(str(resources.files("snncompress.demo") / "weights" / WEIGHTS_FILE))


def pretrained_digits_csnn() -> nn.Sequential:
    from safetensors.torch import load_file

    model = digits_csnn()
    model.load_state_dict(load_file(str(weights_path())))
    model.eval()
    return model


def train_digits_csnn(epochs: int = 15, seed: int = 0, show_progress: bool = False) -> tuple[nn.Sequential, float]:
    """Train the demo model on the digits train split; returns the model and its test accuracy."""
    from snncompress.data import DataOptions, load_data
    from snncompress.sim.training import TrainConfig, train

    torch.manual_seed(seed)
    model = digits_csnn()
    opts = DataOptions(time_steps=DEMO_TIME_STEPS, batch_size=32, seed=seed)
    train_set = load_data("digits:train", opts)
    test_set = load_data("digits:test", opts)
    result = train(model, train_set, test_set, TrainConfig(epochs=epochs, lr=2e-3, seed=seed, keep_best=False),
                   show_progress=show_progress, description="train demo model")
    return model, result.best_accuracy


if __name__ == "__main__":
    from safetensors.torch import save_file

    trained, acc = train_digits_csnn(show_progress=True)
    out = Path(__file__).parent / "weights" / WEIGHTS_FILE
    out.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(out))
    print(f"test accuracy {acc:.2f}% -> {out}")
