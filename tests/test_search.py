"""``tflpipe search``: strategies learn (on synthetic rewards, no training), a study trains only deployable
nets, resumes without redoing trials, refuses another study's folder, and says so in one line when the
space holds no deployable net."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.search.space import SearchSpace
from pipeline.search.strategies import NSGA2, RandomSearch, RegularizedEvolution, Reinforce, mnasnet_reward
from tests.helpers import invoke, json_output

TINY = {"name": "tiny", "resolutions": [32, 40], "kernels": [3, 5], "expansions": [3], "depths": [1], "widths": [0.5],
        "se": [False, True], "acts": ["relu6"]}


def _kernel7_share(arch) -> float:
    blocks = [b for s in arch.stages for b in s.blocks]
    return sum(b.kernel == 7 for b in blocks) / len(blocks)


def test_reinforce_and_evolution_learn_a_synthetic_reward():
    space = SearchSpace()
    controller, rng = Reinforce(space), np.random.default_rng(0)
    before = np.mean([_kernel7_share(controller.ask(rng)) for _ in range(50)])
    for _ in range(300):
        arch = controller.ask(rng)
        controller.tell(arch, _kernel7_share(arch))
    after = np.mean([_kernel7_share(controller.ask(rng)) for _ in range(50)])
    assert after > before + 0.2
    best = {}
    for name, strategy in (("random", RandomSearch(space)), ("evolution", RegularizedEvolution(space))):
        scores = []
        for seed in range(5):
            rng, found = np.random.default_rng(seed), 0.0
            for _ in range(120):
                arch = strategy.ask(rng)
                strategy.tell(arch, _kernel7_share(arch))
                found = max(found, _kernel7_share(arch))
            scores.append(found)
        best[name] = np.mean(scores)
    assert best["evolution"] > best["random"]


def _hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by (share of 7x7 kernels up, mean expansion down) points, reference (0, 6)."""
    area, best_x = 0.0, 0.0
    for x, y in sorted(points, key=lambda p: p[1]):  # by cost, cheapest first
        if x > best_x:
            area += (x - best_x) * (6 - y)
            best_x = x
    return area


def test_nsga2_finds_a_better_front_than_random_and_replays_a_study():
    def objectives(arch):
        blocks = [b for s in arch.stages for b in s.blocks]
        return _kernel7_share(arch), float(np.mean([b.expansion for b in blocks]))

    space, fronts = SearchSpace(), {}
    for name, make in (("random", lambda: RandomSearch(space)), ("nsga2", lambda: NSGA2(space, population=10))):
        volumes = []
        for seed in range(3):
            strategy, rng, seen = make(), np.random.default_rng(seed), []
            for _ in range(80):
                arch = strategy.ask(rng)
                assert space.contains(arch)
                seen.append(objectives(arch))
                strategy.tell(arch, seen[-1][0], seen[-1])
            volumes.append(_hypervolume(seen))
        fronts[name] = np.mean(volumes)
    assert fronts["nsga2"] > fronts["random"]
    resumed = NSGA2(space)
    arch = space.sample(np.random.default_rng(9))
    resumed.tell(arch, 0.5, objectives(arch))  # a finished trial of an earlier run becomes a fixed trial
    assert len(resumed.study.trials) == 1


def test_mnasnet_reward():
    assert mnasnet_reward(0.8, 2.0, 2.0) == pytest.approx(0.8)
    assert mnasnet_reward(0.8, 4.0, 2.0) < 0.8 < mnasnet_reward(0.8, 1.0, 2.0)
    assert mnasnet_reward(0.8, 2.1, 2.0, hard=True) == 0.0


@pytest.fixture(scope="module")
def table(cpu_table) -> Path:
    return cpu_table


def _search(tmp_path, table, run_data, out, *extra):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY))
    return invoke("search", "--data", run_data, "--latency-budget", "0.05", "--table", table, "--out", out,
                  "--space", space, "--train-images", "60", "--strategy", "evolution", *extra)


@pytest.mark.slow  # trains three nets: 20 s
def test_search_trains_deployable_nets_resumes_and_writes_its_front(tmp_path, table, run_data):
    out = tmp_path / "study"
    first = json_output(_search(tmp_path, table, run_data, out, "--budget", "1", "--json"))
    assert first["trained"] == 1 and first["pareto"]
    lines = (out / "trials.jsonl").read_text().splitlines()
    more = json_output(_search(tmp_path, table, run_data, out, "--budget", "2", "--zoo", "mobilenet_v2@0.35",
                               "--json"))
    assert [z["spec"] for z in more["zoo"]] == ["mobilenet_v2@0.35"] and (out / "zoo.json").is_file()
    assert 0 <= more["zoo"][0]["accuracy"] <= 1 and more["zoo"][0]["measured_ms"] > 0
    assert more["trained"] == 2 and (out / "trials.jsonl").read_text().splitlines()[:len(lines)] == lines
    for name in ("pareto.json", "pareto.csv", "pareto.png", "summary.json", "study.json"):
        assert (out / name).is_file(), name
    front = json.loads((out / "pareto.json").read_text())["pareto"]
    assert all(t["measured_ms"] > 0 and t["predicted_ms"] > 0 and 0 <= t["accuracy"] <= 1 for t in front)
    other = _search(tmp_path, table, run_data, out, "--budget", "2", "--epochs", "2")
    assert other.exit_code == 1 and "another search space, settings" in other.output


def test_an_unknown_zoo_reference_is_one_line_before_any_search(tmp_path, table, run_data):
    result = _search(tmp_path, table, run_data, tmp_path / "z", "--zoo", "mobilenet_v9")
    assert result.exit_code == 1 and "--zoo 'mobilenet_v9'" in result.output
    assert not (tmp_path / "z" / "trials.jsonl").exists()


def test_a_space_without_deployable_nets_is_one_line(tmp_path, table, run_data):
    space = tmp_path / "swish.json"
    space.write_text(json.dumps({**TINY, "kernels": [3], "se": [False], "acts": ["hard_swish"]}))
    result = invoke("search", "--data", run_data, "--latency-budget", "0.05", "--table", table,
                    "--out", tmp_path / "s", "--space", space, "--target", "edgetpu")
    assert result.exit_code == 1 and "no deployable candidate for edgetpu" in result.output
    assert "HARD_SWISH" in result.output


def test_run_refuses_a_searched_net_without_a_study(tmp_path, run_data):
    result = invoke("run", "--model", f"searched:{tmp_path / 'none'}", "--data", run_data, "--out", tmp_path / "r")
    assert result.exit_code == 1 and "best.json does not exist" in result.output


@pytest.mark.slow  # a search, then a whole run of its best net
def test_the_best_searched_net_goes_through_the_pipeline(tmp_path, table, run_data):
    study = tmp_path / "study"
    json_output(_search(tmp_path, table, run_data, study, "--budget", "1", "--json"))
    best = json.loads((study / "best.json").read_text())
    size = best["arch"]["resolution"]
    wrong = invoke("run", "--model", f"searched:{study}", "--input-size", size + 8, "--data", run_data,
                   "--out", tmp_path / "wrong")
    assert wrong.exit_code == 1 and f"searched at {size} px" in wrong.output
    summary = json_output(invoke("run", "--model", f"searched:{study}", "--input-size", size, "--data", run_data,
                                 "--epochs", "1", "--prune-sparsity", "0", "--no-qat", "--benchmark-runs", "1",
                                 "--no-tensorboard", "--out", tmp_path / "best", "--json"))
    assert "convert" in summary["stages_done"] and (tmp_path / "best" / "model_int8.tflite").is_file()


def test_compound_scaling_multiplies_depth_width_and_resolution():
    from pipeline.search.scaling import Coefficients, scale
    from pipeline.search.space import ZOO_POINTS

    base = ZOO_POINTS["mobilenet_v2"]
    grown = scale(base, Coefficients(1.2, 1.1, 1.15), 2)
    assert grown.resolution == 296 and [s.depth for s in grown.stages] == [3, 5, 6, 5, 5, 2]
    assert [s.width for s in grown.stages] == [1.21] * 6
    assert scale(base, Coefficients(1.2, 1.1, 1.15), 0) == base


@pytest.mark.slow  # 8 conversions and the proxy trainings: 50 s
def test_compound_scaling_grows_a_searched_net_by_the_latency_step(tmp_path, table, run_data):
    study = tmp_path / "study"
    json_output(_search(tmp_path, table, run_data, study, "--budget", "1", "--json"))
    result = json_output(invoke("scale", "--study", study, "--data", run_data, "--table", table, "--out",
                                tmp_path / "family", "--phis", "1", "--grid", "1.0,1.3", "--step", "1.5", "--tolerance", "0.6",
                                "--train-images", "40", "--json"))
    family = {m["phi"]: m for m in result["family"]}
    assert abs(family[1]["predicted_ms"] / family[0]["predicted_ms"] / 1.5 - 1) <= 0.6
    assert all(abs(g["latency_ratio"] / 1.5 - 1) <= 0.6 for g in result["grid"])
    assert (tmp_path / "family" / "phi1" / "best.json").is_file()
    bad = invoke("scale", "--study", study, "--data", run_data, "--table", table, "--out", tmp_path / "x",
                 "--grid", "1.0", "--phis", "1")
    assert bad.exit_code == 1 and "no α, β, γ" in bad.output
