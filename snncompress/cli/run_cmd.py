"""``snncompress run``: run a recipe's passes on a model, check quality gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from snncompress.cli import common as c
from snncompress.cli.compress import (
    CompressJob,
    EnergyOpt,
    GateOpt,
    QuietOpt,
    RunJsonOpt,
    TrainDataOpt,
    note,
    run_job,
)

EPILOG = """Example (CI):

  snncompress run demo --recipe examples/spquant.yaml --data digits -o out.safetensors
  --gate max-accuracy-drop=2 --gate min-memory-reduction=6 --json run.json

Check a recipe without running it:  snncompress run demo --recipe r.yaml --check

Exit codes: 0 success; 1 a pass failed, or a quality gate failed (the output and the JSON are
written first); 2 bad usage, a bad recipe (every problem listed) or bad input."""

RecipeOpt = Annotated[Path, typer.Option("--recipe", "-r", help="Recipe file (.yaml, .yml or .toml).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Change a recipe value before validation, STEP.KEY=VALUE (STEP: index or pass name), "
                  "e.g. --set quantize.epochs=1. Repeatable.")]
CheckOpt = Annotated[bool, typer.Option("--check", help="Validate the recipe (and its targets against the "
                                                         "model) and print it; run nothing.")]


def register(app: typer.Typer) -> None:
    app.command("run", epilog=EPILOG)(run)


def run(
    model: c.ModelArg,
    recipe: RecipeOpt,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the compressed model (.safetensors).")] = None,
    data: c.OptionalDataOpt = None,
    gates: GateOpt = None,
    json_file: RunJsonOpt = None,
    settings: SetOpt = None,
    check: CheckOpt = False,
    train_data: TrainDataOpt = None,
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    trust_code: c.TrustCodeOpt = False,
    encoding: c.EncodingOpt = "direct",
    time_steps: c.TimeStepsOpt = 8,
    batch_size: c.BatchSizeOpt = 128,
    limit: c.LimitOpt = None,
    seed: c.SeedOpt = 0,
    energy: EnergyOpt = "45nm",
    force: c.ForceOpt = False,
    quiet: QuietOpt = False,
    device: c.DeviceOpt = "auto",
    nir_dt: c.NirDtOpt = None,
    nir_reset: c.NirResetOpt = None,
    nir_spike: c.NirSpikeOpt = None,
    nir_producer: c.NirProducerOpt = None,
) -> None:
    """Run every pass of a recipe on MODEL in one process and write the compressed model.

    The output records each step (pass, version, origin, config, metrics) in its pass history and
    the fp32 baseline figures, for `snncompress report` and `snncompress inspect`.
    """
    from snncompress.recipes import Recipe

    def make_recipe() -> Recipe:
        return Recipe.load(recipe, settings=settings or [])

    if check:
        _check(make_recipe(), model, weights, trust_pickle, trust_code,
               (nir_dt, nir_reset, nir_spike, nir_producer))
        return
    if output is None:
        raise typer.BadParameter("required: where to write the compressed model",
                                 param_hint="'-o' / '--output'")
    job = CompressJob(model=model, output=output, data=data, train_data=train_data, weights=weights,
                      trust_pickle=trust_pickle, trust_code=trust_code, encoding=encoding, time_steps=time_steps,
                      batch_size=batch_size, limit=limit, seed=seed, force=force, json_file=json_file,
                      gates=gates or [], energy=energy, quiet=quiet, device=device, nir_dt=nir_dt,
                      nir_reset=nir_reset, nir_spike=nir_spike, nir_producer=nir_producer)
    run_job(make_recipe, job)


def _check(recipe, model: str, weights: Path | None, trust_pickle: bool, trust_code: bool,
           nir: tuple = (None, None, None, None)) -> None:
    from snncompress.pipeline.run import check_targets

    net = c.load_model_cli(model, weights, trust_pickle, trust_code, *nir)
    check_targets(net, recipe)
    note(f"{recipe.source}: valid ({len(recipe.steps)} step(s): {' -> '.join(recipe.names)})")
    c.console.print(recipe.to_yaml(), end="", markup=False, highlight=False)
