"""featstore/timing.py: phases, the stopwatch, and the extract's driver + workers line."""

from __future__ import annotations

from featstore.timing import Phases, Stopwatch, Timing


def test_a_stopwatch_counts_from_its_offset(monkeypatch):
    now = [100.0]  # a clock the test moves: no real time measured, nothing a loaded machine changes
    monkeypatch.setattr("featstore.timing.time.perf_counter", lambda: now[0])
    clock, plain = Stopwatch(offset=5.0), Stopwatch()
    assert (clock.seconds, plain.seconds) == (5.0, 0.0)
    now[0] += 2.5
    assert (clock.seconds, plain.seconds) == (7.5, 2.5)


def test_a_phase_lapped_again_adds_to_its_seconds_in_first_run_order():
    phases = Phases()
    phases.add({"plan": 1.0})
    phases.lap("plan")
    phases.lap("pass")
    phases.lap("plan")
    phases.lap(None)
    assert list(phases.seconds) == ["plan", "pass"]
    assert phases.seconds["plan"] >= 1.0


def test_the_extract_timing_line_and_manifest_entry():
    driver = Phases()
    driver.add({"plan": 1.0, "pass": 6.0, "commit": 0.5})
    wk = {"task_s": 10.0, "model_s": 8.0, "decode_s": 2.0, "tasks": 2, "model_reused": 1}
    t = Timing(driver=driver, workers=wk)
    assert t.line() == (
        "workers: model 80%, decode wait 0%, Spark input 0%, Spark output 0%, worker start 0%, "
        "other 20% of 10.0 task-s in 2 tasks (1 found the model built; decode 2.0 s on its own "
        "thread); driver: plan 1.0 s, pass 6.0 s, commit 0.5 s"
    )
    assert t.as_dict()["driver"] == {"plan": 1.0, "pass": 6.0, "commit": 0.5}
