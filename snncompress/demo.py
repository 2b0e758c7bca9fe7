"""The demo: the main job on the built-in default model and data.

Loads the digits convolutional SNN, measures its fp32 accuracy, compresses it with the default
recipe, prints the hardware report and writes the compressed file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from snncompress.models.zoo import DEMO_TIME_STEPS


def run_demo(output: Path, *, force: bool = False, retrain: bool = False, epochs: int | None = None,
             seed: int = 0, console: Console | None = None, err_console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the figures it printed."""
    from snncompress.data import DataOptions, load_data
    from snncompress.evaluate import evaluate
    from snncompress.fileformat.atomic import check_output_path
    from snncompress.fileformat.compressed import save_compressed
    from snncompress.models.loading import load_model
    from snncompress.models.zoo import train_digits_csnn
    from snncompress.state import get_state

    console = console or Console()
    err_console = err_console or Console(stderr=True)
    check_output_path(output, force)
    if retrain:
        model, _ = train_digits_csnn(seed=seed, show_progress=True)
        get_state(model).source = {"kind": "builtin", "name": "demo"}
    else:
        model = load_model("demo")
    opts = DataOptions(time_steps=DEMO_TIME_STEPS, batch_size=128, seed=seed)
    test = load_data("digits:test", opts)
    fp32 = evaluate(model, test, show_progress=True, description="fp32 accuracy")
    console.print(f"demo model (digits CSNN, T={DEMO_TIME_STEPS}): fp32 test accuracy {fp32.accuracy:.2f}%")
    save_compressed(model, output, force=force)
    console.print(f"wrote {output}")
    return {"fp32_accuracy": fp32.accuracy, "output": str(output)}
