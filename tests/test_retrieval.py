"""jobs/retrieve.py: the retrieval table's metrics equal a brute-force computation (float64
distances, one query at a time, loops), known answers on constructed cases, re-runs, bad input
(one line, exit 2, nothing written), and the table as analysts read it (DuckDB, hive)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featstore import store
from featstore.retrieval import read_retrieval, search
from jobs import retrieve as retrieve_job
from tests.storefakes import write_feature_set

# six attributes: 64 label vectors for ~80 items, so exact matches are rare (R_q < k happens)
ATTRS = ["Smiling", "Male", "Young", "Bangs", "Eyeglasses", "Wavy_Hair"]


def _store(
    root: Path,
    x: np.ndarray,
    splits: list[str],
    labels: np.ndarray,
    *,
    name: str = "toy-avg",
    attrs: list[str] = ATTRS,
    source: str = "celeba",
) -> dict:
    """A store with a labels table (``labels`` bool, rows x attrs) and one feature set."""
    ids = [f"{i:06d}.jpg" for i in range(1, len(x) + 1)]
    layout = store.Layout(root)
    lab = pa.table(
        {
            "image_id": ids,
            "split": splits,
            **{a: labels[:, j].astype(bool) for j, a in enumerate(attrs)},
        },
        schema=store.labels_schema(attrs),
    )
    with store.TableWriter(layout, "labels") as w:
        pq.write_table(lab, w.data / "part-00000.parquet")
        w.commit(
            store.base_manifest(
                "labels", attributes=attrs, source=source, counts={"rows": len(ids)}
            ),
            has_errors=False,
        )
    write_feature_set(root, name, ids, splits, x)
    return {"ids": ids, "splits": splits, "x": x, "labels": labels, "name": name}


def _random_store(root: Path, n: int = 120, dim: int = 6, seed: int = 0, **kw) -> dict:
    rng = np.random.default_rng(seed)
    splits = ["train"] * (n * 2 // 3) + ["val"] * (n // 6)
    splits += ["test"] * (n - len(splits))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    labels = rng.random((n, len(ATTRS))) < np.array([0.3, 0.5, 0.7, 0.2, 0.4, 0.6])
    return _store(root, x, splits, labels, **kw)


def _run(root: Path, *args: str) -> int:
    return retrieve_job.main(["--store", str(root), *args])


def _rows(root: Path, name: str = "toy-avg", **where) -> dict:
    df = read_retrieval(str(root), name)
    for col, v in where.items():
        df = df[df[col] == v]
    return {(r.k, r.target, r.attribute): r for r in df.itertuples()}


# ------------------------------------------------------------ brute force (float64, loops)


def _neighbours(x: np.ndarray, q: int, items: list[int], k: int, metric: str) -> list[int]:
    cand = [i for i in items if i != q]
    if metric == "cosine":
        xq = x[q].astype(np.float64) / np.linalg.norm(x[q])
        d = [-(x[i].astype(np.float64) @ xq) / np.linalg.norm(x[i]) for i in cand]
    else:
        d = [float(((x[i].astype(np.float64) - x[q]) ** 2).sum()) for i in cand]
    return [cand[j] for j in np.argsort(d, kind="stable")[:k]]


def _brute(info: dict, k: int, metric: str, queries="test", items="train") -> dict:
    x, y, splits = info["x"], info["labels"], info["splits"]
    qs = [i for i, s in enumerate(splits) if s == queries]
    its = [i for i, s in enumerate(splits) if s == items]
    out: dict = {}

    def score(name, rel_fn):
        acc, prec, aps, nrel = [], [], [], 0
        for q in qs:
            nn = _neighbours(x, q, its, k, metric)
            rel = [rel_fn(q, i) for i in nn]
            acc.append(max(rel))
            prec.append(sum(rel) / k)
            r = sum(rel_fn(q, i) for i in its if i != q)
            if r:
                nrel += 1
                hits, ap = 0, 0.0
                for j, v in enumerate(rel, 1):
                    hits += v
                    ap += v * hits / j
                aps.append(ap / min(k, r))
        out[name] = (np.mean(acc), np.mean(prec), np.mean(aps) if aps else None, nrel)

    for a, name in enumerate(ATTRS):
        score(name, lambda q, i, a=a: float(y[q, a] == y[i, a]))
    score("exact", lambda q, i: float((y[q] == y[i]).all()))

    def jac(q, i):
        union = (y[q] | y[i]).sum()
        return 1.0 if union == 0 else (y[q] & y[i]).sum() / union

    acc = [max(jac(q, i) for i in _neighbours(x, q, its, k, metric)) for q in qs]
    prec = [np.mean([jac(q, i) for i in _neighbours(x, q, its, k, metric)]) for q in qs]
    out["jaccard"] = (np.mean(acc), np.mean(prec), None, None)
    return out


# ------------------------------------------------------------ tests


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_metrics_equal_brute_force(tmp_path, metric):
    info = _random_store(tmp_path)
    assert _run(tmp_path, "--feature-set", "toy-avg", "--metric", metric, "--k", "1,3,5") == 0
    rows = _rows(tmp_path, metric=metric)
    for k in (1, 3, 5):
        want = _brute(info, k, metric)
        for a in ATTRS:
            r = rows[(k, "attribute", a)]
            assert (r.top_k_accuracy, r.top_k_precision, r.map_at_k) == pytest.approx(
                want[a][:3]
            ), (k, a)
        for target in ("exact", "jaccard"):
            r = rows[(k, target, "*")]
            got = (r.top_k_accuracy, r.top_k_precision)
            assert got == pytest.approx(want[target][:2]), (k, target)
        r = rows[(k, "exact", "*")]
        assert r.n_relevant_queries == want["exact"][3]
        assert (r.map_at_k is None or np.isnan(r.map_at_k)) == (want["exact"][2] is None)
        if want["exact"][2] is not None:
            assert r.map_at_k == pytest.approx(want["exact"][2])
        mean = rows[(k, "mean", "*")]
        assert mean.top_k_precision == pytest.approx(np.mean([want[a][1] for a in ATTRS]))


def test_same_split_excludes_the_query_itself(tmp_path):
    info = _random_store(tmp_path, seed=3)
    assert (
        _run(
            tmp_path,
            "--feature-set",
            "toy-avg",
            "--queries",
            "train",
            "--items",
            "train",
            "--k",
            "1,4",
        )
        == 0
    )
    rows = _rows(tmp_path, queries="train")
    for k in (1, 4):
        want = _brute(info, k, "cosine", queries="train", items="train")
        for a in ATTRS:
            assert rows[(k, "attribute", a)].top_k_precision == pytest.approx(want[a][1])
            assert rows[(k, "attribute", a)].map_at_k == pytest.approx(want[a][2])
        assert rows[(k, "exact", "*")].n_items == info["splits"].count("train") - 1


def test_duplicates_retrieve_each_other_at_k1(tmp_path):
    rng = np.random.default_rng(1)
    n_train, n_test = 40, 8
    x_train = rng.normal(size=(n_train, 5)).astype(np.float32)
    twins = rng.choice(n_train, n_test, replace=False)
    x = np.concatenate([x_train, x_train[twins]])
    y_train = rng.random((n_train, len(ATTRS))) < 0.5
    labels = np.concatenate([y_train, y_train[twins]])
    splits = ["train"] * n_train + ["test"] * n_test
    _store(tmp_path, x, splits, labels)
    for metric in ("cosine", "l2"):
        idx = search(x[n_train:], x_train, 1, metric=metric)
        assert idx[:, 0].tolist() == twins.tolist()
        assert _run(tmp_path, "--feature-set", "toy-avg", "--metric", metric, "--k", "1") == 0
        rows = _rows(tmp_path, metric=metric)
        for key in [(1, "attribute", a) for a in ATTRS] + [(1, "exact", "*"), (1, "jaccard", "*")]:
            assert rows[key].top_k_accuracy == 1.0, (metric, key)
        assert rows[(1, "exact", "*")].map_at_k == 1.0


def test_duplicates_within_one_split_find_their_twin(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(10, 4)).astype(np.float32)
    x = np.concatenate([base, base])  # image i and i + 10 are the same image
    idx = search(x, x, 1, metric="l2", exclude_self=True)
    assert idx[:, 0].tolist() == [*range(10, 20), *range(10)]
    idx = search(x, x, 1, metric="cosine", backend="numpy", exclude_self=True)
    assert idx[:, 0].tolist() == [*range(10, 20), *range(10)]
    # three copies: the two nearest of a copy may both be the others (the query not among them)
    x3 = np.concatenate([base[:1], base[:1], base[:1], base[1:]])
    for backend in ("faiss", "numpy"):
        idx = search(x3, x3, 1, metric="l2", backend=backend, exclude_self=True)
        assert idx.shape == (len(x3), 1)
        assert all(row[0] != q for q, row in enumerate(idx.tolist()))
        assert all(row[0] in (0, 1, 2) for row in idx[:3].tolist())


def test_cosine_and_l2_disagree_where_they_should(tmp_path):
    # query (1, 0): cosine's nearest is (10, 1) (same direction), l2's is (0.5, 0.5) (close by)
    x = np.array([[10, 1], [0.5, 0.5], [-3, 4], [1, 0]], dtype=np.float32)
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)
    _store(tmp_path, x, ["train", "train", "train", "test"], labels, attrs=ATTRS[:3])
    assert search(x[3:], x[:3], 1, metric="cosine").tolist() == [[0]]
    assert search(x[3:], x[:3], 1, metric="l2").tolist() == [[1]]
    for metric, want in (("cosine", 1.0), ("l2", 0.0)):
        assert _run(tmp_path, "--feature-set", "toy-avg", "--metric", metric, "--k", "1") == 0
        assert _rows(tmp_path, metric=metric)[(1, "exact", "*")].top_k_accuracy == want


def test_numpy_backend_equals_faiss():
    rng = np.random.default_rng(4)
    q, items = rng.normal(size=(300, 16)), rng.normal(size=(2000, 16))
    for metric in ("cosine", "l2"):
        a = search(q, items, 10, metric=metric, backend="faiss", query_block=64)
        b = search(q, items, 10, metric=metric, backend="numpy", query_block=64)
        assert (a == b).mean() > 0.999  # float32 rounding may swap two near-equal neighbours


def test_class_per_folder_source_is_single_label(tmp_path):
    rng = np.random.default_rng(5)
    classes = ["cat", "dog", "fox"]
    n = 90
    cls = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 4)) + 2.0 * np.eye(3, 4)[cls]).astype(np.float32)
    splits = ["train"] * 60 + ["test"] * 30
    info = _store(tmp_path, x, splits, np.eye(3, dtype=bool)[cls], attrs=classes, source="folder")
    assert _run(tmp_path, "--feature-set", "toy-avg", "--k", "1,5") == 0
    rows = _rows(tmp_path)
    assert {t for _, t, _ in rows} == {"class"}
    qs = [i for i, s in enumerate(splits) if s == "test"]
    its = [i for i, s in enumerate(splits) if s == "train"]
    for k in (1, 5):
        hits = [[cls[i] == cls[q] for i in _neighbours(info["x"], q, its, k, "cosine")] for q in qs]
        assert rows[(k, "class", "*")].top_k_accuracy == pytest.approx(
            np.mean([any(h) for h in hits])
        )
        assert rows[(k, "class", "*")].top_k_precision == pytest.approx(np.mean(hits))
        for c, name in enumerate(classes):
            mine = [h for h, q in zip(hits, qs) if cls[q] == c]
            assert rows[(k, "class", name)].n_queries == len(mine)
            assert rows[(k, "class", name)].top_k_precision == pytest.approx(np.mean(mine))


def test_rerun_is_done_changed_set_reruns_other_settings_kept(tmp_path, capsys):
    info = _random_store(tmp_path)
    assert _run(tmp_path, "--feature-set", "toy-avg", "--k", "1,5") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        line.startswith("retrieve time: read ")
        and " search " in line
        and " metrics " in line
        and " commit " in line
    ), line
    manifest_path = store.Layout(tmp_path).manifest_path("retrieval/toy-avg")
    first = json.loads(manifest_path.read_text())
    assert first["feature_set_content"] == store.fs_fingerprint(
        store.feature_set_manifest(tmp_path, "toy-avg")
    )
    capsys.readouterr()
    assert _run(tmp_path, "--feature-set", "toy-avg", "--k", "1,5") == 0
    assert "already done" in capsys.readouterr().out
    assert json.loads(manifest_path.read_text())["created"] == first["created"]
    assert _run(tmp_path, "--feature-set", "toy-avg", "--k", "1,5", "--metric", "l2") == 0
    assert set(read_retrieval(str(tmp_path), "toy-avg")["metric"]) == {"cosine", "l2"}
    # a rebuilt feature set: the run is redone, rows of the old content are dropped
    write_feature_set(tmp_path, "toy-avg", info["ids"], info["splits"], info["x"][::-1].copy())
    capsys.readouterr()
    assert _run(tmp_path, "--feature-set", "toy-avg", "--k", "1,5") == 0
    assert "already done" not in capsys.readouterr().out
    df = read_retrieval(str(tmp_path), "toy-avg")
    assert set(df["metric"]) == {"cosine"}
    assert set(df["feature_set_content"]) == {
        store.fs_fingerprint(store.feature_set_manifest(tmp_path, "toy-avg"))
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--feature-set", "../bad name"],
        ["--feature-set", "no-such-set"],
        ["--feature-set", "toy-avg", "--k", "0"],
        ["--feature-set", "toy-avg", "--k", "1,five"],
        ["--feature-set", "toy-avg", "--k", "1000"],
        ["--feature-set", "toy-avg", "--metric", "dot"],
        ["--feature-set", "toy-avg", "--queries", "holdout"],
        ["--feature-set", "toy-avg", "--attributes", "Bald"],
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args):
    _random_store(tmp_path)
    capsys.readouterr()
    assert _run(tmp_path, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featstore: error:"), err
    assert not (tmp_path / "retrieval").exists()


def test_table_read_by_duckdb_glob_with_hive_partitioning(tmp_path):
    _random_store(tmp_path)
    _random_store(tmp_path, seed=9, name="other-avg")
    for name in ("toy-avg", "other-avg"):
        assert _run(tmp_path, "--feature-set", name, "--k", "5") == 0
    glob = str(tmp_path / "retrieval" / "**" / "*.parquet")
    got = duckdb.sql(
        f"SELECT feature_set, count(*) AS n, max(top_k_precision) AS p FROM "
        f"read_parquet('{glob}', hive_partitioning = true) WHERE k = 5 AND "
        f"target = 'mean' GROUP BY feature_set ORDER BY feature_set"
    ).fetchall()
    assert [(fs, n) for fs, n, _ in got] == [("other-avg", 1), ("toy-avg", 1)]
    assert all(0.0 <= p <= 1.0 for _, _, p in got)
    files = sorted(
        p.relative_to(tmp_path).as_posix()
        for p in (tmp_path / "retrieval").rglob("*")
        if p.is_file()
    )
    assert files == [
        "retrieval/feature_set=other-avg/part-00000.parquet",
        "retrieval/feature_set=toy-avg/part-00000.parquet",
    ]


def test_on_a_store_built_by_the_real_jobs(job_store, tmp_path):
    """The jobs' store (ingest with bad images, extract, reduce): every committed set is
    searchable; the rows equal the brute force on what the store holds."""
    import shutil

    from tests.conftest import JOB_FS

    root = tmp_path / "store"
    shutil.copytree(job_store, root)
    name = f"{JOB_FS}-pca4"
    assert (
        _run(
            root,
            "--feature-set",
            name,
            "--queries",
            "train",
            "--items",
            "train",
            "--k",
            "1,3",
            "--metric",
            "l2",
        )
        == 0
    )
    attrs = store.read_manifest(store.Layout(root), "labels")["attributes"]
    table = store.read_arrow(root, name, splits=["train"])
    x = store.embedding_matrix(table, 4, name)
    labels = np.stack([table[a].to_numpy(zero_copy_only=False) for a in attrs], 1)
    rows = _rows(root, name)
    assert {a for _, t, a in rows if t == "attribute"} == set(attrs)
    nn = [_neighbours(x, q, list(range(len(x))), 3, "l2") for q in range(len(x))]
    for a_i, a in enumerate(attrs[:3]):
        y = labels[:, a_i]
        assert rows[(3, "attribute", a)].top_k_precision == pytest.approx(
            np.mean([[y[i] == y[q] for i in nn[q]] for q in range(len(y))])
        )
    assert rows[(1, "exact", "*")].n_queries == table.num_rows


def test_dry_run_on_a_store_built_by_the_real_jobs(job_store, tmp_path, capsys, monkeypatch):
    """--dry-run shows the plan (splits, metric, k, targets) and writes nothing; after the real
    run the same dry run says there is nothing to do."""
    import shutil

    from tests.conftest import JOB_FS

    root = tmp_path / "store"
    shutil.copytree(job_store, root)
    name = f"{JOB_FS}-pca4"
    splits = store.rows_per_split(store.feature_set_manifest(root, name)["files"])
    attrs = store.read_manifest(store.Layout(root), "labels")["attributes"]
    args = ["--feature-set", name, "--metric", "l2", "--k", "1,3"]

    def listing() -> tuple[list[str], list[dict]]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")), store.list_tables(root)

    def refuse(*a, **kw):
        raise AssertionError("--dry-run ran the search")

    before = listing()
    head = [
        f"store:       {root}",
        f"feature set: {name} (4 floats; " + ", ".join(f"{s} {n}" for s, n in splits.items()) + ")",
        f"search:      {splits['test']} test queries x {splits['train']} train items, l2, k=1,3, "
        "faiss",
        f"targets:     {len(attrs)} attributes ({', '.join(attrs[:6])}, ...); mean, exact, jaccard",
    ]
    with monkeypatch.context() as m:
        m.setattr("featstore.retrieval.run_retrieve", refuse)
        capsys.readouterr()
        assert _run(root, *args, "--dry-run") == 0
        assert capsys.readouterr().out.splitlines() == [
            *head,
            f"writes:      {root / 'retrieval' / f'feature_set={name}'} (this setting's rows; "
            "other settings' rows of the same content are kept)",
            f"dry run: nothing was run or written -> {root}",
        ]
        # the same split, one attribute
        assert _run(root, *args, "--queries", "train", "--attributes", attrs[1], "--dry-run") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[2] == (
            f"search:      {splits['train']} train queries x {splits['train']} train items, l2, "
            "k=1,3, faiss; the same split: a query never finds itself"
        )
        assert out[3] == f"targets:     1 attribute ({attrs[1]}); mean, exact, jaccard"
        # bad input: the same one line and exit 2 as without --dry-run
        assert _run(root, "--feature-set", name, "--k", "1000", "--dry-run") == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
        assert captured.err.startswith("featstore: error:")
    assert listing() == before and not (root / "retrieval").exists()
    assert _run(root, *args) == 0
    after = listing()
    with monkeypatch.context() as m:
        m.setattr("featstore.retrieval.run_retrieve", refuse)
        capsys.readouterr()
        assert _run(root, *args, "--dry-run") == 0
        assert capsys.readouterr().out.splitlines() == [
            *head,
            "dry run: already done (this setting, this feature set's content): nothing to do "
            f"-> {root}",
        ]
    assert listing() == after
