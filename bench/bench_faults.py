"""Randomized kill -9 campaign against the store: for each stage, N trials that start the stage's
real job (the ``featstore`` CLI, its own process group: driver, JVM and Python workers), kill the
whole group at a random moment, check what readers then see, re-run the stage, and compare with
an undisturbed reference run.

For every trial it checks:
  * readers: ``list_tables`` works and every listed table passes ``check_table(deep=True)``
    (sizes, row counts, sha256, full decode); no table is half there;
  * the re-run (no ``--overwrite``) exits 0 or 1 and commits;
  * rows: the committed tables hold exactly the reference's image ids (rows lost, rows
    duplicated) and the same embeddings (max |difference|, relative to the largest value).

    .venv/bin/python bench/bench_faults.py --trials 3          # ~10 min on 2 cores

Damaged inputs (``--damage``, issue 25): on copies of the reference store, one file of the base
feature set is damaged four ways (a flipped byte inside a data page, truncated to 3,000 bytes,
deleted, a stray copy beside it); then ``ls``, ``reduce --overwrite``, ``retrieve``, ``train``
and ``extract`` (no ``--overwrite``) must refuse it (exit 2, the file named), nothing derived
may be committed, and ``extract --overwrite`` must repair it (``describe --check`` passes).

    .venv/bin/python bench/bench_faults.py --trials 0 --damage  # the damage campaign only

Prints one line per trial and a table per stage; figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from featstore import store  # noqa: E402

FS = "mobilenetv2-out_relu-avg-32x32-random0"
MODEL = [
    "--model",
    "mobilenetv2",
    "--weights",
    "random",
    "--input-size",
    "32x32",
    "--batch-size",
    "8",
    "--set",
    "extract.chunk_rows=40",
]


def stage_args(stage: str, st: Path, src: Path) -> list[str]:
    return {
        "ingest": ["ingest", "--store", str(st), "--path", str(src)],
        "extract": ["extract", "--store", str(st), *MODEL],
        "reduce": ["reduce", "--store", str(st), "--feature-set", FS, "--dims", "4,8"],
        "train": [
            "train",
            "--store",
            str(st),
            "--feature-sets",
            f"{FS}-pca4,{FS}-pca8",
            "--attributes",
            "Smiling,Male,Young,Bangs",
            "--models",
            "lasso",
            "--set",
            "train.folds=3",
            "--set",
            "train.bootstrap=100",
        ],
    }[stage]


STAGES = ("ingest", "extract", "reduce", "train")


def run(args: list[str], *, kill_after: float | None = None) -> tuple[int | None, float]:
    """Run ``featstore ARGS``; with ``kill_after``, SIGKILL its process group then. Returns
    (exit code, or None when killed; seconds)."""
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    cmd = [sys.executable, "-m", "jobs.cli", *args, "--master", "local[2]"]
    if args[0] in ("ls", "describe", "migrate"):
        cmd = cmd[:-2]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None, time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr.read().decode()[-3000:])
    return proc.returncode, time.perf_counter() - t0


def run_text(args: list[str]) -> tuple[int, str]:
    """Run ``featstore ARGS`` to the end: (exit code, the last line of stderr; on success, the
    count of Java stack-trace lines it printed, which should be none)."""
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    spark = [] if args[0] in ("ls", "describe", "retrieve") else ["--master", "local[2]"]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args, *spark],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("featstore:")]
    if proc.returncode in (0, 1):
        traces = sum(1 for ln in proc.stderr.splitlines() if ln.startswith("\tat "))
        return proc.returncode, f"{traces} Java trace lines"
    return proc.returncode, lines[-1] if lines else ""


DAMAGES = ("flip", "truncate", "delete", "stray")


def damage(st: Path, kind: str, rng: random.Random) -> Path:
    """Damage one data file of the base feature set; return the file named in the refusals."""
    import pyarrow.parquet as pq

    m = store.feature_set_manifest(st, FS)
    path = store.Layout(st).features(FS) / rng.choice(m["files"])["path"]
    if kind == "flip":
        col = pq.ParquetFile(path).metadata.row_group(0).column(1)
        data = bytearray(path.read_bytes())
        data[col.data_page_offset + rng.randrange(col.total_compressed_size)] ^= 0x01
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[:3000])
    elif kind == "delete":
        path.unlink()
    else:
        stray = path.with_name("part-stray.parquet")
        shutil.copy(path, stray)
        return stray
    return path


def damage_campaign(ref_store: Path, work: Path, rng: random.Random) -> bool:
    """Each kind of damage against every stage that reads the base set; True if all held."""
    print("\ndamage    ls        reduce  retrieve  train   extract  named  derived  repaired")
    held = True
    for kind in DAMAGES:
        st = work / f"damage-{kind}"
        shutil.copytree(ref_store, st)
        before = {t["id"]: t["manifest"]["created"] for t in store.list_tables(st)}
        bad = damage(st, kind, rng)
        codes, named = {}, True
        for stage, args in (
            ("ls", ["ls", str(st)]),
            (
                "reduce",
                ["reduce", "--store", str(st), "--feature-set", FS, "--dims", "4", "--overwrite"],
            ),
            (
                "retrieve",
                [
                    "retrieve",
                    "--store",
                    str(st),
                    "--feature-set",
                    FS,
                    "--backend",
                    "numpy",
                    "--k",
                    "1",
                ],
            ),
            (
                "train",
                [
                    "train",
                    "--store",
                    str(st),
                    "--feature-sets",
                    FS,
                    "--attributes",
                    "Male",
                    "--models",
                    "lasso",
                ],
            ),
            ("extract", ["extract", "--store", str(st), *MODEL]),
        ):
            codes[stage], line = run_text(args)
            if stage != "ls" and str(bad) not in line:
                named = False
                print(f"  {kind} {stage}: {line}")
        after = {t["id"]: t["manifest"]["created"] for t in store.list_tables(st)}
        derived = "none" if after == before else "COMMITTED"
        rc, traces = run_text(["extract", "--store", str(st), *MODEL, "--overwrite"])
        rc_check, _ = run_text(["describe", str(st), FS, "--check"])
        print(f"  {kind}: extract --overwrite exit {rc}, {traces} on the console")
        repaired = rc in (0, 1) and rc_check == 0
        ls_rc = codes.pop("ls")
        ls_text = f"{ls_rc} (a)" if kind == "flip" else str(ls_rc)
        print(
            f"{kind:<9} {ls_text:<9} "
            + "  ".join(f"{codes[s]:<6}" for s in codes)
            + f"   {'yes' if named else 'NO':<5}  {derived:<7}  {'yes' if repaired else 'NO'}"
        )
        held &= (
            all(c == 2 for c in codes.values())
            and named
            and derived == "none"
            and repaired
            and (ls_rc == 2 or kind == "flip")
        )
        shutil.rmtree(st, ignore_errors=True)
    print(
        "(a) ls reads no file (a listing and stats): a flipped byte keeps the size; the "
        "stages' verified read (sha256) and `describe --check` find it"
    )
    return held


def snapshot(st: Path) -> dict[str, tuple[list[str], np.ndarray | None]]:
    """{table: (sorted ids or result keys, embeddings in that order)} of every committed table,
    after every table passed the deep check."""
    out: dict[str, tuple[list[str], np.ndarray | None]] = {}
    if not st.exists():
        return out
    for t in store.list_tables(st, damaged=True):
        if t["damaged"]:
            raise AssertionError(f"damaged after the kill: {t['damaged']}")
        store.check_table(st, t["name"], deep=True)
        if t["kind"] == "features":
            tab = store.read_arrow(st, t["name"], attributes=[])
            out[t["name"]] = (
                tab["image_id"].to_pylist(),
                np.stack(tab["embedding"].to_numpy(zero_copy_only=False)),
            )
        elif t["name"] == "results":
            res = store.read_results(st)
            out["results"] = (
                sorted(f"{r.attribute}|{r.feature_set}|{r.status}" for r in res.itertuples()),
                None,
            )
        else:
            ids = store.read_table(st, t["name"], ["image_id"])["image_id"].to_pylist()
            out[t["name"]] = (sorted(ids), None)
    return out


def compare(got: dict, ref: dict) -> tuple[int, int, float]:
    """(rows lost, rows duplicated, max relative embedding difference) of ``got`` vs ``ref``."""
    lost = dup = 0
    diff = 0.0
    for name, (ids, emb) in ref.items():
        g_ids, g_emb = got.get(name, ([], None))
        lost += len(set(ids) - set(g_ids))
        dup += len(g_ids) - len(set(g_ids))
        if emb is not None and g_emb is not None and g_ids == ids:
            diff = max(diff, float(np.abs(g_emb - emb).max() / max(np.abs(emb).max(), 1e-30)))
        elif emb is not None:
            diff = float("inf")
    return lost, dup, diff


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3, help="trials per stage")
    p.add_argument("--n", type=int, default=120, help="synthetic images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--dir", help="work folder (default: a temp folder, removed)")
    p.add_argument(
        "--damage", action="store_true", help="also the damaged-input campaign (issue 25)"
    )
    a = p.parse_args()
    rng = random.Random(a.seed)
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench-faults-"))
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; {a.n} synthetic images, {a.trials} trials per stage"
    )
    from featstore.sources.synthetic import generate

    src = work / "celeba"
    generate(src, a.n, seed=a.seed)
    (src / "img_align_celeba" / "000003.jpg").write_bytes(b"not an image")

    # reference: the chain undisturbed, a snapshot of the store before each stage
    ref_store = work / "ref"
    before: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    after: dict[str, dict] = {}  # the reference store's tables after each stage
    for stage in STAGES:
        before[stage] = work / f"before-{stage}"
        if ref_store.exists():
            shutil.copytree(ref_store, before[stage])
        rc, seconds[stage] = run(stage_args(stage, ref_store, src))
        assert rc in (0, 1), f"reference {stage} failed ({rc})"
        after[stage] = snapshot(ref_store)
    print("reference: " + ", ".join(f"{s} {seconds[s]:.1f} s" for s in STAGES))

    damage_held = damage_campaign(ref_store, work, rng) if a.damage else True
    summary = []
    for stage in a.stages.split(",") if a.trials else ():
        reference = after[stage]
        stats = {"trials": 0, "killed": 0, "survived": 0, "lost": 0, "dup": 0, "diff": 0.0}
        for trial in range(a.trials):
            st = work / f"{stage}-{trial}"
            if before[stage].exists():
                shutil.copytree(before[stage], st)
            at = rng.uniform(0.1, 1.0) * seconds[stage]
            rc, _ = run(stage_args(stage, st, src), kill_after=at)
            stats["trials"] += 1
            stats["killed"] += rc is None
            try:
                after_kill = snapshot(st)  # readers right after the kill
                ok_readers = True
            except Exception as exc:
                print(f"  {stage} trial {trial}: readers failed after the kill: {exc}")
                after_kill, ok_readers = {}, False
            partial = {
                k: v for k, v in after_kill.items() if k in reference and v[0] != reference[k][0]
            }
            rc2, _ = run(stage_args(stage, st, src))
            got = snapshot(st)
            lost, dup, diff = compare(got, reference)
            survived = (
                ok_readers
                and not partial
                and rc2 in (0, 1)
                and lost == 0
                and dup == 0
                and diff < 1e-4
            )
            stats["survived"] += survived
            stats["lost"] += lost
            stats["dup"] += dup
            stats["diff"] = max(stats["diff"], diff)
            print(
                f"  {stage} trial {trial}: kill at {at:.1f} s "
                f"({'killed' if rc is None else f'finished first, exit {rc}'}), readers "
                f"{'ok' if ok_readers and not partial else 'SAW PARTIAL DATA'}, re-run exit "
                f"{rc2}, rows lost {lost}, duplicated {dup}, max embedding diff {diff:.1e}"
            )
            shutil.rmtree(st, ignore_errors=True)
        summary.append((stage, stats))
    print("\nstage    trials  killed  survived  rows lost  duplicated  max rel. embedding diff")
    for stage, s in summary:
        print(
            f"{stage:<8} {s['trials']:>6}  {s['killed']:>6}  {s['survived']:>8}  "
            f"{s['lost']:>9}  {s['dup']:>10}  {s['diff']:.1e}"
        )
    if not a.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if damage_held and all(s["survived"] == s["trials"] for _, s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
