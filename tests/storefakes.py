"""Small stores with known values for reader tests: no CNN, no ingest, but written through the
store's one writer (:class:`featstore.store.TableWriter`), so they have the layout, manifests,
checksums and errors tables that the jobs write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featstore import store

ATTRS = ["Smiling", "Male"]


def make_store(root: Path, n: int = 12, dim: int = 4, name: str = "toy-avg", seed: int = 0) -> dict:
    """A store with a labels table and one committed feature set. Returns what was written."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    splits = [
        "train" if i < n * 2 // 3 else ("val" if i < n * 5 // 6 else "test") for i in range(n)
    ]
    x = rng.normal(size=(n, dim)).astype(np.float32)
    labels = {a: rng.random(n) < 0.5 for a in ATTRS}

    layout = store.Layout(root)
    lab = pa.table(
        {"image_id": ids, "split": splits, **{a: labels[a] for a in ATTRS}},
        schema=store.labels_schema(ATTRS),
    )
    with store.TableWriter(layout, "labels") as w:
        pq.write_table(lab, w.data / "part-00000.parquet")
        w.commit(
            store.base_manifest("labels", attributes=ATTRS, counts={"rows": n}), has_errors=False
        )
    write_feature_set(root, name, ids, splits, x)
    return {"ids": ids, "splits": splits, "x": x, "labels": labels, "name": name}


def write_feature_set(
    root: Path,
    name: str,
    ids: list[str],
    splits: list[str],
    x: np.ndarray,
    row_group_size: int | None = None,
) -> Path:
    layout = store.Layout(root)
    with store.TableWriter(layout, store.features_id(name)) as w:
        for s in sorted(set(splits)):
            rows = [i for i, sp in enumerate(splits) if sp == s]
            part = w.data / f"split={s}"
            part.mkdir(parents=True)
            table = pa.table(
                {
                    "image_id": [ids[i] for i in rows],
                    "embedding": pa.array(
                        [x[i].tolist() for i in rows], type=pa.list_(pa.float32())
                    ),
                }
            )
            pq.write_table(table, part / "part-00000.parquet", row_group_size=row_group_size)
        store.write_errors(w.errors, [])
        w.commit(
            store.base_manifest(
                "features",
                name=name,
                dim=int(x.shape[1]),
                model="toy",
                counts={"ok": len(ids), "errors": 0},
            )
        )
    return layout.features(name)
