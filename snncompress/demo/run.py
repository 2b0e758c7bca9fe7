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
             seed: int = 0, console: Console | None = None, err_console: Console | None = None,
             device: str = "auto") -> dict[str, Any]:
    """Run the demo: the library job (:func:`snncompress.pipeline.job.compress`) on the built-in model and
    data, then the hardware report from the run's own last measurement (the model is not run again).

    Returns:
        The figures it printed.
    """
    from snncompress.costing.report import print_report
    from snncompress.pipeline.job import CompressJob, compress
    from snncompress.recipes import Recipe

    console = console or Console()
    err_console = err_console or Console(stderr=True)

    def log(line: str) -> None:
        err_console.print(line, soft_wrap=True, markup=False, highlight=False)

    def recipe() -> Recipe:
        return Recipe.load(default_recipe_path(), settings=[f"quantize.epochs={epochs}"] if epochs is not None else ())

    model: Any = "demo"
    if retrain:  # the checks compress() makes first, made before the training they would otherwise follow
        from snncompress.demo.zoo import train_digits_csnn
        from snncompress.fileformat.atomic import check_output_path
        from snncompress.state import get_state

        check_output_path(output, force)
        recipe()
        model, _ = train_digits_csnn(seed=seed, show_progress=True)
        get_state(model).source = {"kind": "builtin", "name": "demo"}
    result = compress(CompressJob(
        model=model, recipe=recipe, output=output,
        data="digits:test", time_steps=DEMO_TIME_STEPS, batch_size=128, train_batch_size=32, seed=seed,
        force=force, model_name="demo", show_progress=True, log=log, warn=log, device=device))
    run = result.report
    last = run.last_measurement
    report = print_report(result.model, result.data, console, name="demo (compressed)",
                          description=last.description if last is not None else None)
    before, after = run.before.get("accuracy"), run.after.get("accuracy")
    console.print(f"demo: digits CSNN, T={DEMO_TIME_STEPS}, recipe '{run.recipe.get('description', '')}'")
    console.print(f"accuracy {before:.2f}% (fp32) -> {after:.2f}% (compressed); wrote {output}")
    return {"fp32_accuracy": before, "accuracy": after, "recipe": run.recipe, "run": run.to_dict(),
            "report": report.model_dump(mode="json"),
            "output": str(output)}
