"""Repeat until the answer is known (`seeds.until`, issue 20 point 1).

Three layers, none mocked: the statistics on simulated studies (the confidence sequence keeps its
coverage and its error rate under optional stopping, the naive rule does not); the stopping
decisions replayed on a real plan with made-up metric values; and real sweeps through
`python -m bench`, one of them killed with SIGKILL in its second wave and resumed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bench import faults, store, waves
from bench.analysis import sequential as seq
from bench.config import CompareAxis, ConfigError, compose, to_container
from bench.sweep import expand

# --- the statistics under optional stopping --------------------------------------------------------


def test_sequence_keeps_its_coverage_where_stopping_on_a_narrow_t_interval_does_not() -> None:
    """20,000 studies of accuracies like breast_cancer's (sd 0.015 on a 114-row test set), each
    adding one seed at a time after a first wave of 5 until the interval is narrower than 0.02.
    The stated level is 95%: the sequence stays above it, the naive t interval falls about 15
    standard errors below it (measured 98.9% and 92.1%; docs/repeat-until.md)."""
    draw = seq.rounded_normal(0.93, 0.015, 114)
    truth = seq.rounded_mean(0.93, 0.015, 114)
    out = seq.simulate_width_rule(
        draw, truth, first=5, wave=1, most=200, target=0.02, seed=1, floor=seq.sd_floor(114)
    )
    cs, naive = out["sequence"], out["naive"]
    assert cs["rate"] >= 0.95, out
    assert naive["rate"] < 0.95 - 8 * naive["se"], out
    assert cs["median_seeds"] > naive["median_seeds"], out  # validity costs seeds


def test_a_comparison_of_equal_setups_rarely_gives_a_false_verdict() -> None:
    """Two equal setups (paired differences with mean 0, sd 0.02, on a 114-row grid), a verdict
    looked for after 10 seeds and every 5 more up to 200: the sequence names a winner at most
    alpha = 5% of the time; stopping once a t interval excludes 0 does in about 27%."""

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        return np.round(rng.normal(0.0, 0.02, shape) * 114) / 114

    out = seq.simulate_null_compare(
        draw, first=10, wave=5, most=200, margin=0.005, seed=2, floor=seq.sd_floor(114)
    )
    cs, naive = out["sequence"], out["naive"]
    assert cs["rate"] <= 0.05, out
    assert naive["rate"] > 0.05 + 20 * naive["se"], out


def test_ties_on_a_coarse_test_set_keep_their_coverage_with_the_sd_floor() -> None:
    """Seeds whose true sd is below one test row (114 rows: steps of 0.0088) mostly tie: a first
    wave of ties has sd 0 and the interval [v, v] stops at once and misses. The floor of half a
    row (`sd_floor`, what bench.waves uses) keeps the sequence at or above 95%."""
    for sd in (0.002, 0.004):
        draw, truth = seq.rounded_normal(0.93, sd, 114), seq.rounded_mean(0.93, sd, 114)
        args = {"first": 5, "wave": 5, "most": 200, "target": 0.01, "studies": 5000, "seed": 3}
        bare = seq.simulate_width_rule(draw, truth, **args)["sequence"]
        floored = seq.simulate_width_rule(draw, truth, **args, floor=seq.sd_floor(114))
        assert bare["rate"] < 0.9, (sd, bare)
        assert floored["sequence"]["rate"] >= 0.95, (sd, floored)


def test_a_difference_just_above_the_margin_is_rarely_called_equivalent() -> None:
    """The true difference is 0.011 with margin 0.01: "equivalent" and "better, within margin"
    are both wrong there, and the sequence says either at most alpha of the time. Where better
    and within the margin both hold, the verdict says both."""

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        return np.round(rng.normal(0.011, 0.01, shape) * 114) / 114

    truth = seq.rounded_mean(0.011, 0.01, 114)  # rounding moves the mean a little
    assert 0.01 < truth < 0.0125
    out = seq.simulate_compare(draw, truth, first=10, wave=5, most=200, margin=0.01,
                               studies=5000, seed=4, floor=seq.sd_floor(114))  # fmt: skip
    assert out["sequence"]["rate"] <= 0.05, out
    assert seq.verdict(seq.Interval(9, 0.005, 0.002, 0.008), 0.01) == "first within margin"
    assert seq.wrong(["first within margin", "first", "equivalent", ""], 0.011, 0.01).tolist() == [
        True, False, True, False
    ]  # fmt: skip


def test_intervals_verdicts_and_looks() -> None:
    x = [0.9, 0.92, 0.91, 0.93, 0.9]
    cs, t = seq.confidence_sequence(x, 0.95, 20.0), seq.t_interval(x, 0.95)
    assert cs.low < t.low < t.high < cs.high and cs.mean == pytest.approx(np.mean(x))
    assert seq.confidence_sequence([0.5], 0.95, 20.0).width == 1.0  # one value: no spread yet
    assert seq.verdict(seq.Interval(9, 0.02, 0.01, 0.03), 0.005) == "first"
    assert seq.verdict(seq.Interval(9, -0.02, -0.03, -0.01), 0.005) == "second"
    assert seq.verdict(seq.Interval(9, 0.0, -0.004, 0.004), 0.005) == "equivalent"
    assert seq.verdict(seq.Interval(9, 0.0, -0.01, 0.004), 0.005) is None
    assert seq.verdict(seq.Interval(9, 0.02, 0.001, 0.004), 0.005) == "first within margin"
    assert seq.looks(5, 5, 17).tolist() == [5, 10, 15, 17]


# --- the plan and its decisions ---------------------------------------------------------------------

UNTIL = ["+sweep=seeds", "libraries=[sklearn,torch]", "sweep.varied=[split,init]", "seeds.n=5"]
UNTIL += ["seeds.until.wave=5", "seeds.until.max=20"]


def test_keys_do_not_depend_on_waves_and_the_first_wave_is_the_plain_sweep() -> None:
    cfg = compose([*UNTIL, "seeds.until.ci_width=0.01"])
    plan = waves.Plan.of(to_container(cfg))
    plain = expand(compose(UNTIL))  # the same sweep without seeds.until
    longer = expand(compose([*UNTIL[:-3], "seeds.n=20"]))  # 20 seeds, no waves
    assert {s.trial_key for s in plain} == {k for k in plan.where if plan.wave_of(k) == 1}
    assert set(plan.where) == {s.trial_key for s in longer}
    assert sorted({plan.wave_of(k) for k in plan.where}) == [1, 2, 3, 4]


def _values(plan: waves.Plan, by_library: dict[str, float], noise: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    out = {}
    for sid, i in plan.where.values():
        setup = plan.setups[sid]
        base = by_library[setup.fields["library"]]
        out[setup.specs[i].trial_key] = base + float(rng.normal(0, noise))
    return out


def test_a_comparison_stops_at_its_verdict_and_a_width_at_its_target() -> None:
    plan = waves.Plan.of(to_container(compose([*UNTIL, "seeds.until.compare=library"])))
    assert len(plan.pairs) == 2
    states, pairs = waves.replay(plan, _values(plan, {"sklearn": 0.95, "torch": 0.90}, 0.005))
    assert {p.says for p in pairs} == {"sklearn better"}
    assert all(p.wave == 1 and st.reason == "verdict: sklearn better" for p in pairs
               for st in (states[p.first.id], states[p.second.id]))  # fmt: skip
    states, pairs = waves.replay(plan, _values(plan, {"sklearn": 0.95, "torch": 0.95}, 0.0))
    assert {p.says for p in pairs} == {"equivalent"}  # identical seeds, identical metrics
    narrow = waves.Plan.of(to_container(compose([*UNTIL, "seeds.until.ci_width=0.01"])))
    states, _ = waves.replay(narrow, _values(narrow, {"sklearn": 0.95, "torch": 0.9}, 0.004))
    assert {st.reason.split()[0] for st in states.values()} == {"width"}
    states, _ = waves.replay(narrow, _values(narrow, {"sklearn": 0.95, "torch": 0.9}, 0.03))
    assert {st.reason for st in states.values()} == {"max 20 reached"}
    assert all(st.interval.n == 20 and st.waves == 4 for st in states.values())


AXES = {
    "library": ["libraries=[sklearn,torch]"],
    "model": ["libraries=[sklearn]", "+model@model_zoo.mlp=mlp", "models=[logreg,mlp]"],
    "mode": ["libraries=[torch]", "modes=[aligned,defaults]"],
    "device": ["libraries=[torch]", "sweep.devices=[cpu,cuda]"],
    "deterministic": ["libraries=[torch]", "sweep.deterministic=[true,false]"],
    "threads": ["libraries=[torch]", "sweep.threads=[1,2]"],
    "cpu_isa": ["libraries=[torch]", "sweep.cpu_isa=[native,avx2]"],
}


@pytest.mark.parametrize("axis", [a.value for a in CompareAxis])
def test_every_compare_axis_pairs_its_setups(axis: str) -> None:
    """compose and Plan.of for each axis seeds.until.compare accepts: one pair, ordered as the
    config names the values (model: the model's name as specs hold it, not its config key)."""
    args = ["+sweep=seeds", "sweep.varied=[split]", "seeds.n=5", *AXES[axis]]
    plan = waves.Plan.of(to_container(compose([*args, f"seeds.until.compare={axis}"])))
    assert len(plan.pairs) == 1 and not plan.unpaired
    first, second = (plan.setups[sid] for sid in plan.pairs[0])
    assert str(first.fields[axis]) != str(second.fields[axis])
    if axis == "model":
        assert (first.fields["model"], second.fields["model"]) == ("logreg", "mlp")


def test_unpaired_setups_get_their_reason_and_nothing_paired_is_refused() -> None:
    """sklearn's order and init seeds are left out under mode=defaults: those setups of the
    aligned mode have no partner, say so before the run, and stop with that reason."""
    args = ["+sweep=seeds", "libraries=[sklearn]", "sweep.varied=[split,init]", "seeds.n=5"]
    plan = waves.Plan.of(to_container(compose(
        [*args, "modes=[aligned,defaults]", "seeds.until.compare=mode"])))  # fmt: skip
    lone = [plan.setups[sid] for sid in plan.unpaired]
    assert len(plan.pairs) == 1 and [s.fields["varied"] for s in lone] == ["init"]
    assert plan.notes() == [f"seeds.until: {lone[0].label}: no partner on mode (the sweep has no "
                            "mode=defaults setup with its other settings: left out by the sweep "
                            "or by seeds.n_by_source); it stops after its first wave"]  # fmt: skip
    values = {sp.trial_key: 0.9 + 0.01 * (i % 3) for s in plan.setups.values()
              for i, sp in enumerate(s.specs)}  # fmt: skip
    states, _ = waves.replay(plan, values)
    assert states[lone[0].id].reason.startswith("no partner on mode (")
    assert states[lone[0].id].waves == 1
    with pytest.raises(
        ConfigError, match="^seeds.until.compare: no two setups differ only in mode"
    ):
        waves.Plan.of(to_container(compose(
            [*args[:2], "sweep.varied=[init]", "modes=[aligned,defaults]",
             "seeds.until.compare=mode"])))  # fmt: skip


def test_interrupted_failed_and_nan_waves_are_told_apart(tmp_path: Path) -> None:
    """A wave whose trials were all tried and failed: "no ok trial in wave k"; a wave never
    reached (a killed run): "open (interrupted in wave k)". read_values sees error rows, drops
    NaN, and gives the test rows that floor the sd."""
    plan = waves.Plan.of(to_container(compose([*UNTIL, "seeds.until.ci_width=0.0001"])))
    split, init = (next(s for s in plan.setups.values()
                        if s.fields["varied"] == v and s.fields["library"] == "sklearn")
                   for v in ("split", "init"))  # fmt: skip
    keys, status, acc = [], [], []
    for setup in (split, init):
        for i, sp in enumerate(setup.specs[:10]):  # waves 1 and 2
            keys.append(sp.trial_key)
            failed = setup is split and i >= 5
            status.append("error" if failed else "ok")
            acc.append(None if failed else (float("nan") if i == 9 else 0.9 + 0.01 * (i % 2)))
    table = pa.table({"trial_key": keys, "status": status, "accuracy": acc,
                      "n_test": [114] * len(keys)}, schema=pa.schema(
        [store.SCHEMA.field(c) for c in ("trial_key", "status", "accuracy", "n_test")]))  # fmt: skip
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "part-0.parquet")
    rows = waves.read_values(tmp_path, plan)
    assert len(rows.values) == 14 and len(rows.tried) == 20 and set(rows.n_test.values()) == {114}
    states, _ = waves.replay(plan, rows)
    assert states[split.id].reason == "no ok trial in wave 2"
    assert states[init.id].reason == "open (interrupted in wave 3)"  # 9 ok values, NaN dropped
    assert states[init.id].interval.n == 9
    torch = [st for st in states.values() if st.setup.fields["library"] == "torch"]
    assert {st.reason for st in torch} == {"open (interrupted in wave 1)"}
    lines = waves.summary_lines(plan, rows)
    assert any("no ok trial; stopped: open (interrupted in wave 1)" in line for line in lines)


def test_caps_and_first_waves_name_the_key_that_set_them() -> None:
    cfg = compose([*UNTIL, "seeds.until.ci_width=0.0001", "seeds.n_by_library={torch:10}"])
    plan = waves.Plan.of(to_container(cfg))
    states, _ = waves.replay(plan, _values(plan, {"sklearn": 0.95, "torch": 0.9}, 0.03))
    reasons = {st.setup.fields["library"]: st.reason for st in states.values()}
    assert reasons == {
        "sklearn": "max 20 reached",
        "torch": "max 10 reached (seeds.n_by_library.torch)",
    }
    assert waves.trials_phrase(cfg, 20) == "20 trials in the first wave, up to 60"
    assert waves.trials_phrase(compose(UNTIL), 20) == "20 trials"


# --- real sweeps, killed and resumed ----------------------------------------------------------------

SWEEP = ["+sweep=seeds", "libraries=[sklearn]", "sweep.varied=[split,init]", "seeds.n=5"]
SWEEP += ["seeds.until.ci_width=0.02", "seeds.until.wave=5", "seeds.until.max=15"]
SWEEP += ["progress=false", "rows_per_part=1000"]


def _bench(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def _journal_waves(run: Path) -> set[int]:
    found: set[int] = set()
    for journal in store.journal_files(store.run_files(run).staging):
        try:
            found |= set(store.read_journal(journal).column("wave").to_pylist())
        except (OSError, pa.ArrowInvalid):  # being written
            continue
    return found


# The killed run's hook: half its trials sleep 1 s (chosen by key, the same every time), so its
# second wave is still running when its first row of that wave is journaled. `faults` says how to
# run, not what the trials are: the resume runs without it.
SLOW = ["faults.hang_on=0.5", "faults.hang_seconds=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A sweep killed with SIGKILL once a row of its second wave is journaled, then resumed
    with the same command: the resumed run goes through every path of an uninterrupted one
    (its third wave starts from nothing) besides the resume's own."""
    results = tmp_path_factory.mktemp("until") / "results"
    plan = waves.Plan.of(to_container(compose(SWEEP)))
    second = [k for k in plan.where if plan.wave_of(k) == 2]
    slow = {k for k in second if faults.chosen(k, 0.5, "hang")}
    assert slow and len(slow) < len(second), "the hook must slow some second-wave trials, not all"
    run = results / "seeds" / "killed"
    driver = subprocess.Popen(
        _bench(*SWEEP, *SLOW, f"results_dir={results}", "run_id=killed"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while driver.poll() is None and time.monotonic() < deadline:
            if run.exists() and 2 in _journal_waves(run):
                break
            time.sleep(0.02)
    finally:
        finished_first = driver.poll() is not None
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    at_kill = set(store.read_results(run)["trial_key"]) | {
        k for j in store.journal_files(store.run_files(run).staging)
        for k in store.read_journal(j).column("trial_key").to_pylist()
    }  # fmt: skip
    try:
        resumed = subprocess.run(
            _bench(*SWEEP, f"results_dir={results}", "run_id=killed"),
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:  # Ray's agents outlive a driver killed with SIGKILL: end its process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    return {"plan": plan, "finished_first": finished_first, "at_kill": at_kill,
            "resumed": resumed, "run": run}  # fmt: skip


def test_a_sweep_runs_waves_until_each_setup_is_answered(runs: dict) -> None:
    result, run, plan = runs["resumed"], runs["run"], runs["plan"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wave 1: 2 of 2 setups open, 10 trials" in result.stderr
    assert "wave 2: 1 of 2 setups open, 5 trials" in result.stderr
    assert "wave 3: 1 of 2 setups open, 5 trials\n" in result.stderr  # none done before
    df = store.read_results(run)
    assert df["trial_key"].is_unique and (df["status"] == "ok").all()
    counts = df.groupby(["varied", "wave"]).size().to_dict()
    # logreg's init seed moves accuracy little: answered after the first wave; the split seed
    # moves it by points: that setup runs to max.
    assert counts == {("init", 1): 5, ("split", 1): 5, ("split", 2): 5, ("split", 3): 5}
    assert all(plan.wave_of(k) == w for k, w in zip(df["trial_key"], df["wave"], strict=True))
    out = result.stdout
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("  ")}
    assert "5 seeds, 1 wave(s)" in lines["sklearn init"], out
    assert "stopped: width 0.0" in lines["sklearn init"] and "< 0.02" in lines["sklearn init"]
    assert "15 seeds, 3 wave(s)" in lines["sklearn split"]
    assert lines["sklearn split"].endswith("stopped: max 15 reached")


def test_a_killed_run_resumes_with_one_ok_row_per_trial(runs: dict) -> None:
    result, plan = runs["resumed"], runs["plan"]
    assert not runs["finished_first"], "the sweep ended before it was killed; make it longer"
    assert {plan.wave_of(k) for k in runs["at_kill"]} == {1, 2}  # killed within its 2nd wave
    assert "the waves' decisions are recomputed from their rows" in result.stderr
    assert "wave 2: 1 of 2 setups open, 5 trials (" in result.stderr  # some were done
    df = store.read_results(runs["run"])
    assert df["trial_key"].is_unique and (df["status"] == "ok").all() and len(df) == 20
    assert runs["at_kill"] <= set(df["trial_key"])


def test_the_report_has_the_section_and_its_plot(runs: dict, tmp_path: Path) -> None:
    from bench.report import write_report

    report = write_report(runs["run"], tmp_path, n_resamples=200)
    text = report.read_text()
    assert "## Repeat until the answer is known (seeds.until)" in text
    assert "| sklearn split | 15 | 3 |" in text and "max 15 reached" in text
    assert (tmp_path / "repeat_until.png").stat().st_size > 0


# --- bad input --------------------------------------------------------------------------------------

BASE = ["+sweep=seeds", "libraries=[sklearn]", "sweep.varied=[split]", "seeds.n=5"]
BAD = [
    (["seeds.until.ci_width=0"], "seeds.until.ci_width: must be > 0"),
    (["seeds.until.ci_width=-0.01"], "seeds.until.ci_width: must be > 0"),
    (["seeds.until.ci_width=0.01", "seeds.until.max=4"], "seeds.until.max: must be >= the first"),
    (["seeds.until.ci_width=0.01", "seeds.until.wave=0"], "seeds.until.wave: must be >= 1"),
    (["seeds.until.ci_width=0.01", "seeds.until.metric=log_loss"], "seeds.until.metric"),
    (["seeds.until.compare=library"], "seeds.until.compare: library must take exactly two"),
    (["libraries=[sklearn,torch]", "seeds.until.compare=library", "seeds.until.margin=0"],
     "seeds.until.margin: must be > 0"),
    (["seeds.until.ci_width=0.01", "seeds.n=3"], "seeds.n: seeds.until needs a first wave"),
    (["seeds.until.ci_width=0.01", "seeds.n_by_source={split:3}"],
     "seeds.n_by_source.split: seeds.until needs a first wave of >= 5 seeds per setup"),
    (["seeds.until.ci_width=0.01", "seeds.n_by_library={sklearn:4}"],
     "seeds.n_by_library.sklearn: seeds.until needs a first wave"),
    (["seeds.until.ci_width=0.01", "seeds.n_by_source={split:30}", "seeds.until.max=20"],
     "seeds.until.max: must be >= the first wave (seeds.n_by_source.split: 30)"),
    (["seeds.until.ci_widht=0.01"], "seeds.until.ci_widht"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"), BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_names_the_key(args: list[str], needle: str) -> None:
    """What `python -m bench` composes first (bench.config.compose): one line naming the key."""
    with pytest.raises(ConfigError) as refused:
        compose([*BASE, *args])
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_bad_input_is_refused_before_any_work(tmp_path: Path, run_at_once) -> None:
    """Two of the cases as a user meets them (each a fresh interpreter, at once): exit 2, one
    line, nothing written."""
    cases = [BAD[1], BAD[2]]
    dirs = [tmp_path / f"r{i}" for i in range(len(cases))]
    done = run_at_once(
        [_bench(*BASE, *args, f"results_dir={d}") for (args, _), d in zip(cases, dirs, strict=True)],
        timeout=120, cwd=tmp_path,
    )  # fmt: skip
    for proc, (args, needle), results in zip(done, cases, dirs, strict=True):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr[-2000:])
        assert lines[0].startswith("bench: error: ") and needle in lines[0], (args, lines[0])
        assert not results.exists()
