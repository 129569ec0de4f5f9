"""What a verified read costs on a full-size feature set (issue 25).

A feature set of CelebA's size (202,599 rows x 512 float32, ~415 MB in 8 files, as extract's
chunks write it) is committed through the store's one writer, then timed:

- ``ls``: the listing and stats ``featstore ls`` does (no file opened);
- ``footers``: the cheap check every reader does (every footer read);
- ``sha256``: the verified read a stage does to its input (every byte hashed against the
  manifest, :func:`featstore.store.verify_table`), cold in this process (no memo);
- ``read``: reading the embeddings as a stage does anyway (pyarrow, all columns);
- ``read+crc``: the same read of a copy written with Parquet page checksums
  (``write_page_checksum=True``) and verified (``page_checksum_verification=True``): the
  format's own mechanism, which covers the data pages but not the footer.

The page cache is warm (the files were just written; dropping it would disturb the other users
of this machine), so the figures are CPU cost: hashing or decoding, not the disk.

    .venv/bin/python bench/bench_verify.py [--rows 202599] [--dim 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featstore import store


def _table(rows: int, dim: int, start: int, split: str, rng: np.random.Generator) -> pa.Table:
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim).cast(pa.list_(pa.float32()))
    ids = pa.array([f"{i:06d}.jpg" for i in range(start, start + rows)])
    return pa.table({"image_id": ids, "embedding": emb})


def build(root: Path, rows: int, dim: int, files: int) -> tuple[store.Layout, str]:
    layout = store.Layout(root)
    tid = store.features_id("bench-512")
    rng = np.random.default_rng(0)
    per = -(-rows // files)
    with store.TableWriter(layout, tid) as w:
        for k in range(files):
            n = min(per, rows - k * per)
            split = "train" if k < files * 8 // 10 else ("val" if k < files * 9 // 10 else "test")
            folder = w.data / f"split={split}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                _table(n, dim, k * per, split, rng),
                folder / f"part-{k:05d}.parquet",
                use_dictionary=False,
            )
        w.commit(
            store.base_manifest(
                "features", name="bench-512", dim=dim, counts={"ok": rows, "errors": 0}
            ),
            has_errors=False,
        )
    return layout, tid


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=202_599)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        t = time.perf_counter()
        layout, tid = build(tmp / "store", a.rows, a.dim, a.files)
        manifest = store.read_manifest(layout, tid)
        files = store.data_files(layout, tid, manifest)
        size = sum(p.stat().st_size for p in files)
        print(
            f"feature set: {a.rows:,} x {a.dim} float32 in {len(files)} files, "
            f"{size / 1e6:,.0f} MB (built in {time.perf_counter() - t:.1f} s)"
        )
        import inspect

        crc_ok = "write_page_checksum" in inspect.signature(pq.write_table).parameters
        crc = tmp / "crc"
        crc.mkdir()
        for p in files if crc_ok else ():
            pq.write_table(
                pq.read_table(p), crc / p.name, use_dictionary=False, write_page_checksum=True
            )

        def sha() -> None:
            store._SHA_SEEN.clear()  # cold: what a new job process does
            store.verify_table(layout, tid, manifest)

        def read(paths, verify=False) -> None:
            for p in paths:
                pq.read_table(p, **({"page_checksum_verification": True} if verify else {}))

        rows = [
            (
                "ls (listing + stat)",
                timed(lambda: store.check_files(layout, tid, manifest, footers=False), a.repeat),
            ),
            (
                "footers (every reader)",
                timed(lambda: store.check_files(layout, tid, manifest), a.repeat),
            ),
            ("sha256 verified read", timed(sha, a.repeat)),
            ("read (pyarrow)", timed(lambda: read(files), a.repeat)),
        ]
        if crc_ok:
            rows.append(
                (
                    "read + page CRC verify",
                    timed(lambda: read(sorted(crc.iterdir()), True), a.repeat),
                )
            )
        else:
            print(
                f"pyarrow {pa.__version__}: no write_page_checksum / "
                "page_checksum_verification (pyarrow >= 15): page checksums not measured"
            )
        for name, secs in rows:
            print(f"{name:<26} {secs:8.3f} s  {size / 1e6 / secs:9,.0f} MB/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
