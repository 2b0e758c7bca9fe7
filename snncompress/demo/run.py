"""The demo: the main job on the built-in default model and data.

Loads the digits convolutional SNN (shipped weights, or ``--retrain``), compresses it with the
default recipe (``snncompress/demo/default.yaml``), prints the hardware report against the fp32
model and writes the compressed file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from snncompress.demo.zoo import DEMO_TIME_STEPS


def default_recipe_path() -> Path:
    return Path(str(resources.files("snncompress.demo") / "default.yaml"))


def run_demo(output: Path, *, force: bool = False, retrain: bool = False, epochs: int | None = None,
             seed: int = 0, console: Console | None = None, err_console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the figures it printed."""
    from snncompress.data import DataOptions, load_data
    from snncompress.fileformat.atomic import check_output_path
    from snncompress.fileformat.compressed import save_compressed
    from snncompress.fileformat.loading import load_model
    from snncompress.demo.zoo import train_digits_csnn
    from snncompress.passes.base import PassContext
    from snncompress.pipeline.run import RunOptions, run_recipe
    from snncompress.recipes import Recipe
    from snncompress.costing.report import print_report
    from snncompress.state import get_state

    console = console or Console()
    err_console = err_console or Console(stderr=True)
    check_output_path(output, force)
    recipe = Recipe.load(default_recipe_path(),
                         settings=[f"quantize.epochs={epochs}"] if epochs is not None else ())
    if retrain:
        model, _ = train_digits_csnn(seed=seed, show_progress=True)
        get_state(model).source = {"kind": "builtin", "name": "demo"}
    else:
        model = load_model("demo")
    test = load_data("digits:test", DataOptions(time_steps=DEMO_TIME_STEPS, batch_size=128, seed=seed))
    train = load_data("digits:train", DataOptions(time_steps=DEMO_TIME_STEPS, batch_size=32, seed=seed))
    ctx = PassContext(data=test, train_data=train, seed=seed, show_progress=True)

    def log(line: str) -> None:
        err_console.print(line, soft_wrap=True, markup=False, highlight=False)

    run = run_recipe(model, recipe, ctx, RunOptions(model_name="demo", log=log, warn=log))
    report = print_report(model, test, console, name="demo (compressed)")
    save_compressed(model, output, force=force)
    before, after = run.before.get("accuracy"), run.after.get("accuracy")
    console.print(f"demo: digits CSNN, T={DEMO_TIME_STEPS}, recipe '{recipe.description}'")
    console.print(f"accuracy {before:.2f}% (fp32) -> {after:.2f}% (compressed); wrote {output}")
    return {"fp32_accuracy": before, "accuracy": after, "recipe": recipe.to_dict(), "run": run.to_dict(),
            "report": report.model_dump(mode="json"),
            "output": str(output)}
