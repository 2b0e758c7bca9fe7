"""The design-space sweep: selection against R computed by hand, resume, two workers on one storage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

pytest.importorskip("optuna")

from snncompress.costing.report import ReportInputs, make_report  # noqa: E402
from snncompress.data.loading import DataBundle, DataOptions  # noqa: E402
from snncompress.errors import ConfigError, InputError  # noqa: E402
from snncompress.fileformat.compressed import read_metadata  # noqa: E402
from snncompress.fileformat.loading import load_model  # noqa: E402
from snncompress.sim.runner import SNNRunner  # noqa: E402
from snncompress.sweep import Constraints, SweepJob, run_sweep, space_from_dict  # noqa: E402
from snncompress.sweep import study as st  # noqa: E402
from snncompress.sweep.point import PointRunner  # noqa: E402
from snncompress.sweep.select import choose, pareto_front, parse_memory  # noqa: E402
from tests.models import CLASSES, TINY_MODELS, T  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = "leaky_mlp"
SPACE = {"version": 1, "passes": [{"pass": "quantize", "mode": "ptq", "calibration": "none"}],
         "choices": {"quantize.weight_quant": ["int8", "pot4", "ternary"],
                     "quantize.membrane_quant": ["fp32", "ternary"]}}


def labelled(n: int, seed: int) -> DataBundle:
    """Inputs labelled by the fp32 model itself (accuracy 100 % before, so quantization moves it)."""
    x = TINY_MODELS[MODEL].example_inputs(n, seed)
    with torch.no_grad():
        y = SNNRunner(load_model(TINY_MODELS[MODEL].ref)).run(x, is_sequence=False, time_steps=T).predictions()
    return DataBundle(f"{MODEL}:{seed}", TensorDataset(x, y), False, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=8, seed=seed))


def job(tmp_path: Path, **kw) -> SweepJob:
    settings = {"model": TINY_MODELS[MODEL].ref, "data": labelled(24, 0), "train_data": labelled(8, 1),
                "space": space_from_dict(SPACE), "results": tmp_path / "sweep.jsonl"}
    return SweepJob(**{**settings, **kw})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fp32_memory_bits(data: DataBundle) -> int:
    """M_0 by hand: the hardware report of the fp32 model, measured on its own."""
    report = make_report(ReportInputs(model=load_model(TINY_MODELS[MODEL].ref), name="fp32", data=data))
    return report.totals.memory.total_bits


@pytest.mark.parametrize("mu", [0.0, 0.5, 4.0])
def test_the_chosen_point_has_the_highest_reward_computed_by_hand(tmp_path, mu):
    sweep = job(tmp_path, mu=mu)
    result = run_sweep(sweep)
    assert len(result.points) == 6 and result.sampler == "grid"
    m0 = fp32_memory_bits(sweep.data)
    by_hand = {}
    for p in result.points:
        assert p["memory_bits_baseline"] == m0
        r = p["accuracy"] / 100 - mu * p["memory_bits"] / m0
        assert p["reward"] == pytest.approx(r)
        by_hand[json.dumps(p["params"], sort_keys=True)] = (r, p["memory_bits"])
    # highest R; a tie goes to the smaller memory
    best = min(by_hand.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    assert json.dumps(result.best["params"], sort_keys=True) == best[0]
    assert len({round(v[0], 9) for v in by_hand.values()}) > 1  # the points differ: the choice is not trivial


def test_constraints_exclude_points_and_the_choice_moves(tmp_path):
    free = run_sweep(job(tmp_path, mu=4.0))
    smallest = free.best
    assert smallest["memory_bits"] == min(p["memory_bits"] for p in free.points)
    limit = Constraints(min_accuracy=(smallest["accuracy"] + 1e-6) / 100)
    assert choose(free.points, 4.0, limit) is not smallest
    # the same figures again, a constraint on memory: only points at most that size are selectable
    cap = sorted(p["memory_bits"] for p in free.points)[2] / 8
    capped = run_sweep(job(tmp_path / "b", mu=0.0, constraints=Constraints(max_memory_bytes=cap),
                           results=None)) if (tmp_path / "b").mkdir() is None else None
    feasible = [p for p in capped.points if p["memory_bits"] / 8 <= cap]
    assert capped.best["accuracy"] == max(p["accuracy"] for p in feasible)
    assert all(p["feasible"] == (p["memory_bits"] / 8 <= cap) for p in capped.points)


def test_the_best_model_is_written_and_is_the_best_recipe(tmp_path):
    out = tmp_path / "best.safetensors"
    result = run_sweep(job(tmp_path, mu=0.5, output=out))
    history = read_metadata(out)["history"]
    assert [h["config"]["weight_quant"] for h in history] == [result.best["recipe"]["passes"][0]["weight_quant"]]
    assert result.output_figures["accuracy"] == result.best["accuracy"]
    assert result.output_figures["memory_bits"] == result.best["memory_bits"]
    again = tmp_path / "again.safetensors"
    run_sweep(job(tmp_path / "x", mu=0.5, output=again, results=None)) if (tmp_path / "x").mkdir() is None else None
    assert again.read_bytes() == out.read_bytes()  # same seed, same bytes


@pytest.mark.parametrize("objective, sampler", [("reward", "tpe"), ("pareto", "nsga2")])
def test_a_sampled_sweep_stops_at_the_trials_asked_for(tmp_path, objective, sampler):
    result = run_sweep(job(tmp_path, objective=objective, trials=3, mu=0.5))
    assert result.sampler == sampler and len(result.points) == 3
    evaluated = [p for p in result.points if "reused_from" not in p]
    assert len(lines(tmp_path / "sweep.jsonl")) == len(evaluated) >= 1  # a repeat is reused, not run again
    assert result.best is not None and result.front


def test_pareto_front_by_hand():
    def rec(trial, acc, mem, energy):
        return {"trial": trial, "accuracy": acc, "memory_bits": mem, "energy_pj": energy, "memory_bits_baseline": 100}

    points = [rec(0, 90, 50, 5), rec(1, 95, 60, 6), rec(2, 89, 55, 6), rec(3, 80, 10, 9), rec(4, 95, 60, 7)]
    front = pareto_front(points, Constraints())
    assert [p["trial"] for p in front] == [3, 0, 1]  # 2 is beaten by 0; 4 by 1 (same acc and memory, more energy)
    assert choose(points, 0.0, Constraints())["trial"] == 1
    assert choose(points, 1.0, Constraints())["trial"] == 3  # 0.8 - 0.1 beats 0.9 - 0.5 and 0.95 - 0.6
    assert pareto_front(points, Constraints(max_memory_bytes=55 / 8))[0]["trial"] == 3


def test_an_interrupted_sweep_resumes_without_redoing_finished_points(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    evaluated: list[dict] = []
    original = PointRunner.evaluate

    def counting(self, point, recipe):
        if len(evaluated) == 2 and interrupt[0]:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third point
        evaluated.append(dict(point))
        return original(self, point, recipe)

    interrupt = [True]
    monkeypatch.setattr(PointRunner, "evaluate", counting)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(job(tmp_path, storage=storage, study="s"))
    assert len(lines(tmp_path / "sweep.jsonl")) == 2
    first = list(evaluated)
    interrupt[0] = False
    result = run_sweep(job(tmp_path, storage=storage, study="s"))
    assert result.resumed == 2
    redone = evaluated[2:]
    assert len(redone) == 4 and not any(p in first for p in redone)  # the two finished points: not again
    records = lines(tmp_path / "sweep.jsonl")
    assert len(records) == 6
    assert sorted(json.dumps(r["params"], sort_keys=True) for r in records) == sorted(
        json.dumps(p, sort_keys=True) for p in space_from_dict(SPACE).grid())
    # a third run finds the grid done and evaluates nothing; another mu re-selects from the same points
    run_sweep(job(tmp_path, storage=storage, study="s"))
    heavy = run_sweep(job(tmp_path, storage=storage, study="s", mu=50.0))
    assert len(evaluated) == 6
    assert heavy.best["memory_bits"] == min(p["memory_bits"] for p in heavy.points)
    # the same study for another space is refused
    other = {**SPACE, "choices": {"quantize.weight_quant": ["int8"]}}
    with pytest.raises(InputError, match="another sweep"):
        run_sweep(job(tmp_path, storage=storage, study="s", space=space_from_dict(other)))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test's own ask() plays the dead worker
def test_a_point_whose_worker_died_is_redone_once_its_heartbeat_is_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "HEARTBEAT_S", 1)
    monkeypatch.setattr(st, "GRACE_S", 1)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(job(tmp_path, storage=storage, study="k", callbacks=[_stop_after(2)]))
    # a worker that took the next point and was killed (SIGKILL): RUNNING, with one old heartbeat
    study = st.optuna().load_study(study_name="k", storage=st.open_storage(storage))
    dead = study.ask()
    study._storage.record_heartbeat(dead._trial_id)
    import time

    time.sleep(2.5)
    result = run_sweep(job(tmp_path, storage=storage, study="k"))
    assert len(result.points) == 6
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[dead.number] == "FAIL"
    assert dead.number not in {p["trial"] for p in result.points}
    _assert_each_point_once(lines(tmp_path / "sweep.jsonl"), storage, "k")


def _stop_after(k: int):
    def callback(study, _trial):
        if len(st.finished_records(study)) >= k:
            raise KeyboardInterrupt

    return callback


def _write_data(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    data = labelled(16, 0)
    x = torch.stack([data.dataset[i][0] for i in range(len(data))])
    y = torch.stack([data.dataset[i][1] for i in range(len(data))])
    path = tmp_path / "data.safetensors"
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(path))
    return path


def _assert_each_point_once(records: list[dict], storage: str, study: str) -> None:
    keys = [json.dumps(r["params"], sort_keys=True) for r in records]
    grid = [json.dumps(p, sort_keys=True) for p in space_from_dict(SPACE).grid()]
    assert sorted(keys) == sorted(grid)  # every point once: no point twice, none missing
    loaded = st.optuna().load_study(study_name=study, storage=storage)
    evaluated = [t for t in loaded.get_trials() if st.RECORD in t.user_attrs
                 and "reused_from" not in t.user_attrs[st.RECORD]]
    assert sorted(json.dumps(t.params, sort_keys=True) for t in evaluated) == sorted(grid)


def test_two_worker_processes_on_one_sqlite_storage_never_take_the_same_point(tmp_path):
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    data = str(_write_data(tmp_path))
    result = run_sweep(SweepJob(model=TINY_MODELS[MODEL].ref, data=data, space=space_from_dict(SPACE), jobs=2,
                                storage=storage, study="w", results=tmp_path / "sweep.jsonl", time_steps=T))
    records = lines(tmp_path / "sweep.jsonl")
    _assert_each_point_once(records, storage, "w")
    assert len(result.points) == 6 and result.best is not None


def test_two_sweep_commands_on_one_storage_share_the_grid(tmp_path, tests_importable):
    """Two machines: the same --storage and --study, started at once (here: two processes)."""
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    data = str(_write_data(tmp_path))
    (tmp_path / "space.yaml").write_text(json.dumps(SPACE))
    commands = [[sys.executable, "-m", "snncompress.cli.app", "sweep", TINY_MODELS[MODEL].ref, "--data", data,
                 "--space", "space.yaml", "-T", str(T), "--storage", storage, "--study", "m", "-q",
                 "--results", "sweep.jsonl", "-o", f"best{i}.safetensors", "--plot", f"pareto{i}.png",
                 "--json", "-" if i == 0 else "sweep1.json"] for i in range(2)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=tests_importable, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd in commands]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    _assert_each_point_once(lines(tmp_path / "sweep.jsonl"), storage, "m")
    # both pick the same best point from the shared study, so write the same model
    assert (tmp_path / "best0.safetensors").read_bytes() == (tmp_path / "best1.safetensors").read_bytes()
    # --json -: stdout is the JSON alone; both saw all six points, in one study
    printed, written = json.loads(outs[0][0]), json.loads((tmp_path / "sweep1.json").read_text())
    assert len(printed["points"]) == len(written["points"]) == 6 and printed["best"] == written["best"]
    assert (tmp_path / "pareto0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the space file and the CLI's bad input ---------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    ({"choices": {"quantize.weight_qunt": ["int8"]}}, "has no key 'weight_qunt'; did you mean 'weight_quant'"),
    ({"choices": {"prune.sparsity": [0.5]}}, "no step 'prune'"),
    ({"choices": {"quantize.weight_quant": ["int8", "pot99"]}}, "point [weight_quant=pot99]"),
    ({"choices": {"quantize.overrides": [[{"targets": ["first"], "weight_quant": "int8"}]]}}, "needs a label"),
    ({"choise": {}}, "choise: unknown key; did you mean 'choices'"),
    ({"choices": {"quantize.rounding": ["nearest", "nearest"]}}, "listed twice"),
])
def test_bad_spaces_are_one_line_errors(edit, message):
    doc = {k: v for k, v in SPACE.items() if not (k == "choices" and "choise" in edit)}
    with pytest.raises(ConfigError) as info:
        space_from_dict({**doc, **edit}, source="s.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_space_of_overrides_with_symbolic_targets_and_labels():
    space = space_from_dict({**SPACE, "choices": {
        "quantize.neuron_quant": [None],  # fp32 threshold and leak (a YAML null)
        "quantize.overrides": {"none": [], "first-last-8bit": [{"targets": ["first", "last"], "weight_quant": "int8"}]},
    }})
    points = list(space.grid())
    assert [p["quantize.overrides"] for p in points] == ["none", "first-last-8bit"]
    recipe = space.recipe(points[1])
    assert recipe.steps[0].config.overrides[0].targets == ["first", "last"]
    assert recipe.steps[0].config.neuron_quant is None
    fixed = space_from_dict({**SPACE, "choices": {"0.neuron_quant": ["fixed1.6", None]}})  # a step by index
    assert [fixed.recipe(p).steps[0].config.neuron_quant for p in fixed.grid()] == ["fixed1.6", None]


def test_sizes_and_the_missing_extra(monkeypatch):
    assert parse_memory("64KiB") == 65536 and parse_memory("1.5MB") == 1.5e6 and parse_memory("4096") == 4096
    with pytest.raises(ConfigError):
        parse_memory("64 parsecs")
    with pytest.raises(ConfigError, match="a fraction"):
        Constraints(min_accuracy=90)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(InputError, match=r"pip install 'snncompress\[sweep\]'"):
        st.optuna()


def test_the_cli_rejects_bad_input_before_any_work(run_cli, tmp_path):
    (tmp_path / "space.yaml").write_text(json.dumps({**SPACE, "choices": {"quantize.weight_qunt": ["int8"]}}))
    result = run_cli("sweep", "demo", "--data", "digits", "--space", "space.yaml", "-o", "b.safetensors")
    assert result.returncode == 2 and result.stderr.startswith("error: space.yaml: choices.quantize.weight_qunt")
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "ok.yaml").write_text(json.dumps(SPACE))
    result = run_cli("sweep", "demo", "--data", "digits", "--space", "ok.yaml", "-o", "b.safetensors",
                     "--min-accuracy", "90")
    assert result.returncode == 2 and "a fraction" in result.stderr
    assert not (tmp_path / "b.safetensors").exists()


def test_the_example_space_is_valid():
    from snncompress.sweep import load_space

    space = load_space(REPO / "examples" / "sweep-tinysnn.yaml")
    assert {c.field for c in space.choices} >= {"weight_quant", "rounding"}
    assert space.size >= 12
