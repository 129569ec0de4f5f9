"""Where a Spark application's wall time went: its event log as a timeline.

    .venv/bin/featstore extract ... --conf spark.eventLog.enabled=true \\
        --conf spark.eventLog.dir=/tmp/events
    .venv/bin/python bench/spark_timeline.py /tmp/events/local-*

Prints, in seconds from the application's start: each job (submitted, ended, its group), each
stage (submitted, first task launched, last task finished, completed, tasks), and the gaps in
which no task ran on any slot. Reads Spark's own JSON-lines event log; no Spark needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def timeline(events: list[dict]) -> list[str]:
    t0 = next(e["Timestamp"] for e in events if e["Event"].endswith("ApplicationStart"))
    ends = [
        e.get("Timestamp") or e.get("Completion Time") or 0
        for e in events
        if e["Event"].endswith(("ApplicationEnd", "JobEnd"))
    ]
    end = max(ends, default=t0)

    def s(ms: float) -> str:
        return f"{(ms - t0) / 1000:7.2f}"

    jobs: dict[int, dict] = {}
    stages: dict[int, dict] = {}
    tasks: list[tuple[float, float, int]] = []
    for e in events:
        ev = e["Event"]
        if ev.endswith("JobStart"):
            props = e.get("Properties") or {}
            jobs[e["Job ID"]] = {
                "start": e["Submission Time"],
                "stages": e.get("Stage IDs", []),
                "group": props.get("spark.jobGroup.id", ""),
                "sql": props.get("spark.sql.execution.id", ""),
            }
        elif ev.endswith("JobEnd"):
            jobs[e["Job ID"]]["end"] = e["Completion Time"]
        elif ev.endswith("StageSubmitted"):
            info = e["Stage Info"]
            stages.setdefault(info["Stage ID"], {}).update(
                name=info["Stage Name"],
                n=info["Number of Tasks"],
                submitted=info.get("Submission Time"),
            )
        elif ev.endswith("StageCompleted"):
            info = e["Stage Info"]
            st = stages.setdefault(
                info["Stage ID"], {"name": info["Stage Name"], "n": info["Number of Tasks"]}
            )
            st["completed"] = info.get("Completion Time")
            st["submitted"] = st.get("submitted") or info.get("Submission Time")
        elif ev.endswith("TaskEnd"):
            ti = e["Task Info"]
            tasks.append((ti["Launch Time"], ti["Finish Time"], e["Stage ID"]))
            st = stages.setdefault(e["Stage ID"], {})
            st["first"] = min(st.get("first", ti["Launch Time"]), ti["Launch Time"])
            st["last"] = max(st.get("last", ti["Finish Time"]), ti["Finish Time"])
            st["busy"] = st.get("busy", 0) + ti["Finish Time"] - ti["Launch Time"]
    out = ["job  submitted    ended  group / sql id"]
    for jid, j in sorted(jobs.items()):
        out.append(
            f"{jid:3d}  {s(j['start'])}  {s(j.get('end', end))}  "
            f"{j['group'] or '-'} / {j['sql'] or '-'}  stages {j['stages']}"
        )
    out.append("stage submitted first-task last-task completed tasks task-s  name")
    for sid, st in sorted(stages.items(), key=lambda kv: kv[1].get("submitted") or 0):
        if st.get("submitted") is None:
            continue  # skipped (its shuffle output reused)
        out.append(
            f"{sid:4d}  {s(st['submitted'])}  {s(st.get('first', st['submitted']))}  "
            f"{s(st.get('last', st['submitted']))}  {s(st.get('completed', end))}  "
            f"{st.get('n', 0):4d}  {st.get('busy', 0) / 1000:6.1f}  "
            f"{st.get('name', '')[:60]}"
        )
    # no task running on any slot: the driver's own time (planning, commits, waiting)
    edges = sorted([(a, 1) for a, _, _ in tasks] + [(b, -1) for _, b, _ in tasks])
    running, last, idle = 0, t0, []
    for t, d in edges:
        if running == 0 and t - last > 300:
            idle.append((last, t))
        running += d
        last = t
    if end - last > 300:
        idle.append((last, end))
    out.append(
        "no task running (> 0.3 s): "
        + ", ".join(f"{s(a).strip()}-{s(b).strip()} ({(b - a) / 1000:.1f} s)" for a, b in idle)
    )
    out.append(f"application: {(end - t0) / 1000:.1f} s from its start to the last job's end")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("event_log", type=Path)
    args = ap.parse_args()
    print("\n".join(timeline(load(args.event_log))))


if __name__ == "__main__":
    main()
