"""bench/faithfulness.py's arithmetic on hand-made per-image figures: who beats random, the baseline choice, the
per-method table, a --load round trip and a one-film --model run (the whole measurement needs ~35 minutes)."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import faithfulness as bench
from core.zoo import BUNDLED, MODELS_DIR


def record(methods: dict[str, dict[str, float]], random: dict[str, float], sd: float = 0.01) -> dict:
    return {"file": "x.png", "target": 1, "methods": methods, "random": random,
            "random_sd": {k: sd for k in random}, "seconds": {m: 1.0 for m in methods}}


def figures(deletion_blur: float, deletion_mean: float, insertion_blur: float, insertion_mean: float,
            morf: float, lerf: float) -> dict[str, float]:
    return {"deletion/blur": deletion_blur, "deletion/mean": deletion_mean, "insertion/blur": insertion_blur,
            "insertion/mean": insertion_mean, "road_morf": morf, "road_lerf": lerf, "road": (lerf - morf) / 2}


RANDOM = figures(0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


@pytest.fixture
def result() -> dict:
    """Two methods on three images. good: wins deletion/blur 3 of 3, deletion/mean 1 of 3, insertion/blur 1 of 3,
    insertion/mean 3 of 3, ROAD MoRF 2 of 3, LeRF 3 of 3. bad: loses everything but deletion/mean 2 of 3."""
    good = [figures(0.4, 0.6, 0.6, 0.7, 0.4, 0.6), figures(0.45, 0.6, 0.4, 0.6, 0.4, 0.6),
            figures(0.49, 0.4, 0.4, 0.55, 0.6, 0.7)]
    bad = [figures(0.6, 0.4, 0.4, 0.4, 0.6, 0.4), figures(0.5, 0.45, 0.5, 0.5, 0.5, 0.5),
           figures(0.7, 0.7, 0.3, 0.3, 0.7, 0.3)]
    return {"model": "m", "images": 3, "methods": ["good", "bad"], "baselines": ["blur", "mean"], "steps": 10,
            "fractions": [0.5], "reference": {"seeds": [0, 1, 2], "grid": 10}, "settings": {"good": {}, "bad": {}},
            "threads": 1, "wall_seconds": 60.0,
            "records": [record({"good": g, "bad": b}, RANDOM) for g, b in zip(good, bad, strict=True)]}


def test_shares_margins_and_the_chosen_baselines(result):
    summary = bench.summarise(result)
    rows = {(r["metric"], r["baseline"]): r for r in summary["by_baseline"]}
    assert rows["deletion", "blur"]["beats_random"] == pytest.approx((3 + 0) / 6)
    assert rows["deletion", "mean"]["beats_random"] == pytest.approx((1 + 2) / 6)
    assert rows["insertion", "blur"]["beats_random"] == pytest.approx((1 + 0) / 6)
    assert rows["insertion", "mean"]["beats_random"] == pytest.approx((3 + 0) / 6)
    # deletion: a tie at 1/2, broken by the median gap in random SDs (blur: 10, 5, 1, -10, 0, -20 -> 0.5;
    # mean: -10, -10, 10, 10, 5, -20 -> -2.5)
    assert rows["deletion", "blur"]["median_gap_in_random_sd"] == pytest.approx(0.5)
    assert rows["deletion", "mean"]["median_gap_in_random_sd"] == pytest.approx(-2.5)
    assert summary["chosen_baseline"] == {"deletion": "blur", "insertion": "mean"}
    good, bad = summary["methods"]
    assert (good["deletion"], good["insertion"], good["road_morf"], good["road_lerf"]) == pytest.approx(
        (1, 1, 2 / 3, 1))
    assert good["road"] == pytest.approx(1.0)  # (lerf - morf) / 2 = 0.1, 0.1, 0.05 against random's 0
    assert good["deletion_margin"] == pytest.approx(0.05) and good["insertion_margin"] == pytest.approx(0.1)
    assert (bad["deletion"], bad["insertion"], bad["road"]) == pytest.approx((0, 0, 0))


def test_the_sanity_report_gives_each_methods_median_and_share_of_films_below_one_half():
    result = {"model": "m", "images": 3, "copies": 3, "input_size": 192, "threads": 1, "wall_seconds": 60.0,
              "per_film": {"good": [0.1, 0.3, 0.8], "bad": [0.9, 0.7, 0.95]}, "sanity": {"good": 0.3, "bad": 0.9}}
    lines = bench.sanity_report(result).splitlines()
    good = next(line.split() for line in lines if line.startswith("good"))
    bad = next(line.split() for line in lines if line.startswith("bad"))
    assert good[1:] == ["0.3", "0.6667"] and bad[1:] == ["0.9", "0"]
    assert "3 new-patient films" in lines[0] and "3 randomised copies" in lines[0]


def test_report_and_load_round_trip(result, tmp_path, capsys):
    text = bench.report(result, bench.summarise(result))
    assert "chosen: deletion -> blur, insertion -> mean" in text and "good" in text
    path = tmp_path / "figures.json"
    path.write_text(json.dumps({**result, "summary": {"stale": True}}))
    bench.main(["--load", str(path)])
    assert capsys.readouterr().out.strip() == text.strip()


def test_unknown_methods_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--methods", "grad_cam,nonsense", "--images", "1"])


def test_a_candidate_checkpoint_is_measured_instead_of_the_bundled_model(tmp_path, capsys):
    """--model: the sanity check runs on the given checkpoint (one film, one method, two copies: a few seconds)."""
    candidate = tmp_path / "candidate.safetensors"
    shutil.copyfile(MODELS_DIR / f"{BUNDLED}.safetensors", candidate)
    bench.main(["--sanity", "--images", "1", "--methods", "grad_cam", "--sanity-copies", "2", "--model",
                str(candidate), "--json"])
    checked = json.loads(capsys.readouterr().out)
    assert checked["model"] == str(candidate) and checked["images"] == 1
