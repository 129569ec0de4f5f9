"""The command line as a new user meets it: bad input answered in one line with exit 2 before
anything heavy is imported, --dry-run of ingest, train and extract, --version, models, ls/describe with
--store, --config by name, quiet library start-up. No Spark session here except where a test
asks for the ``spark`` fixture."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featstore import store
from jobs.cli import main as cli_main
from tests.locks import current_lock, pins
from tests.storefakes import make_store

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pyspark", "tensorflow", "keras", "jax")
MODEL = ["--model", "mobilenetv2", "--weights", "random", "--input-size", "32x32"]

# Runs the command line in a fresh interpreter, then reports which heavy packages it imported.
WRAPPER = f"""
import json, sys
from jobs.cli import main
rc = main(sys.argv[1:])
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"rc": rc, "heavy": heavy}}))
"""


def _run(*argv: str, cwd: Path | None = None) -> tuple[dict, list[str], list[str]]:
    """(rc and heavy modules, stdout lines, stderr lines) of ``featstore ARGV`` in a subprocess."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or REPO,
        env=env,
        check=False,
    )
    out = proc.stdout.strip().splitlines()
    assert out, proc.stderr[-2000:]
    return json.loads(out[-1]), out[:-1], proc.stderr.strip().splitlines()


@pytest.fixture(scope="module")
def fake_store(tmp_path_factory) -> Path:
    """A store with a committed images table of 5 tiny rows, a labels table and one feature set
    (``toy-avg``), written through the store's writer: no Spark, no model."""
    root = tmp_path_factory.mktemp("cli") / "store"
    make_store(root, n=12)
    ids = [f"{i:06d}.jpg" for i in range(1, 6)]
    splits = ["train", "train", "train", "val", "test"]
    with store.TableWriter(store.Layout(root), "images") as w:
        for s in sorted(set(splits)):
            rows = [i for i, sp in enumerate(splits) if sp == s]
            (w.data / f"split={s}").mkdir()
            pq.write_table(
                pa.table(
                    {
                        "image_id": [ids[i] for i in rows],
                        "content": [b"x"] * len(rows),
                        "width": pa.array([178] * len(rows), pa.int32()),
                        "height": pa.array([218] * len(rows), pa.int32()),
                        "source_path": [f"/x/{ids[i]}" for i in rows],
                    }
                ),
                w.data / f"split={s}" / "p.parquet",
            )
        store.write_errors(w.errors, [])
        w.commit(
            store.base_manifest(
                "images",
                input_fingerprint="f" * 64,
                counts={"ok": 5, "errors": 0, "splits": {"train": 3, "val": 1, "test": 1}},
            )
        )
    return root


# ---------------------------------------------------------------- 1. fail fast


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "--model", "resnet5O", "--weights", "random"], "unknown model 'resnet5O'"),
        ([*MODEL, "--layers", "block9_nope"], "unknown layer 'block9_nope' for mobilenetv2"),
        (
            ["--model", "mobilenetv2", "--weights", "/no/such.weights.h5"],
            "weights file not found: /no/such.weights.h5",
        ),
        (["--model", "mobilenetv2", "--weights", "NOT_HDF5"], "is not an HDF5 file"),
        (
            ["--model", "mobilenetv2", "--weights", "imagenet"],
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
        ([*MODEL, "--input-size", "9x9"], "input size 9x9 too small for mobilenetv2"),
        ([*MODEL, "--pooling", "sum"], "extract: argument --pooling: invalid choice: 'sum'"),
        ([*MODEL, "--config", "nosuch.yaml"], "config file not found: nosuch.yaml"),
        ([*MODEL, "--set", "extract.modle=x"], "unknown key 'modle'"),
        (["--store", "/does/not/exist", *MODEL], "/does/not/exist: no such store folder"),
        (["train", "--feature-sets", "nope-pca8"], "no committed feature set 'nope-pca8'"),
        (
            ["train", "--feature-sets", "toy-avg", "--attributes", "Smilling"],
            "unknown attribute 'Smilling'",
        ),
        (["reduce", "--feature-set", "nope"], "nope"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_imports_nothing_heavy(
    fake_store, tmp_path, args, message, monkeypatch
):
    bad = tmp_path / "not.weights.h5"
    bad.write_bytes(b"PK\x03\x04 a zip")
    args = [str(bad) if a == "NOT_HDF5" else a for a in args]
    command = args[0] if args[0] in ("extract", "train", "reduce") else "extract"
    rest = args[1:] if args[0] == command else args
    if "--store" not in rest:
        rest = ["--store", str(fake_store), *rest]
    env_home = tmp_path / "keras-home"  # no ImageNet weights in this Keras cache
    monkeypatch.setenv("KERAS_HOME", str(env_home))
    result, _, err = _run(command, *rest)
    assert result["rc"] == 2
    lines = [ln for ln in err if ln.startswith("featstore:")]
    assert len(lines) == 1 and lines[0].startswith("featstore: error: ") and message in lines[0]
    assert result["heavy"] == []


def test_the_layer_table_matches_keras():
    """The static layer names the command line checks against are what Keras builds (a few
    small models; scripts/gen_model_layers.py --check compares them all)."""
    from featstore import models, modelspecs

    assert modelspecs._layer_table()["keras_version"] == modelspecs.installed_keras_version()
    for name in ("mobilenetv2", "vgg16", "mobilenetv3small"):
        assert modelspecs.known_layers(name) == models.list_layers(name, "32x32")


# ---------------------------------------------------------------- 4. dry runs


def test_train_dry_run_lists_fits_to_run_and_skip(fake_store, tmp_path):
    import shutil

    from featstore.train import cells, grid

    root = tmp_path / "store"
    shutil.copytree(fake_store, root)
    cfg = grid.GridConfig(
        feature_sets=("toy-avg",), attributes=("Smiling", "Male"), models=("lasso", "forest")
    )
    done = grid.plan(root, cfg)[0]  # lasso Smiling: a finished ok cell in the store
    row = cells._empty_row(done, done.key(cfg))
    row["status"] = "ok"
    store.Layout(root).cells.mkdir(parents=True)
    grid._write_cell(store.Layout(root).cells, done.key(cfg), [row])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result, out, _ = _run(
        "train",
        "--store",
        str(root),
        "--feature-sets",
        "toy-avg",
        "--attributes",
        "Smiling,Male",
        "--models",
        "lasso,forest",
        "--dry-run",
    )
    assert result == {"rc": 0, "heavy": []}
    fits = [ln.split()[:3] for ln in out if ln.startswith(("run", "skip"))]
    assert sorted(fits) == [
        ["run", "forest", "Male"],
        ["run", "forest", "Smiling"],
        ["run", "lasso", "Male"],
        ["skip", "lasso", "Smiling"],
    ]
    assert out[-1].startswith("dry run: 4 fits: 3 to run, 1 already done (skipped)")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written


def test_extract_dry_run_shows_images_chunks_and_name(fake_store):
    before = sorted(p.relative_to(fake_store) for p in fake_store.rglob("*"))
    result, out, _ = _run(
        "extract", "--store", str(fake_store), *MODEL, "--dry-run", "--set", "extract.chunk_rows=2"
    )
    assert result == {"rc": 0, "heavy": []}
    text = "\n".join(out)
    assert "feature set: mobilenetv2-out_relu-avg-32x32-random0 (not committed)" in text
    assert "images:      5 (train 3, val 1, test 1)" in text
    assert "chunks:      3 of 1-2 images" in text
    assert sorted(p.relative_to(fake_store) for p in fake_store.rglob("*")) == before


def test_ingest_dry_run_reads_the_listing_only(tmp_path):
    from featstore.sources.synthetic import generate

    src = tmp_path / "celeba"
    generate(src, 10, seed=1)
    root = tmp_path / "store"
    result, out, _ = _run("ingest", "--store", str(root), "--path", str(src), "--dry-run")
    assert result == {"rc": 0, "heavy": []}  # no Spark
    assert out[2].startswith("images:      10 listed (train ")
    assert out[-1] == f"dry run: nothing was run or written -> {root}"
    assert not root.exists()


# ---------------------------------------------------------------- 4. lasso_max_iter


def test_lasso_max_iter_is_a_lasso_setting_and_its_warning_names_the_fit(fake_store, caplog):
    from featstore.config import load_config
    from featstore.train import grid

    cfg = load_config(
        None,
        [
            "train.lasso_max_iter=2",
            "train.feature_sets=toy-avg",
            "train.attributes=Smiling",
            "train.models=lasso",
            "train.folds=2",
            "train.lasso_cs=3",
            "train.bootstrap=10",
        ],
    ).train
    assert cfg.lasso_max_iter == 2
    assert "lasso_max_iter" in grid.cell_settings(cfg, "lasso")
    assert "lasso_max_iter" not in grid.cell_settings(cfg, "forest")
    (cell,) = grid.plan(fake_store, cfg)
    with caplog.at_level(logging.WARNING, logger="featstore.train.lasso"):
        (row,) = grid.run_cell(str(fake_store), cell, cfg)
    assert row["status"] == "ok"
    (warning,) = [r.getMessage() for r in caplog.records if "did not converge" in r.getMessage()]
    assert warning.startswith("lasso Smiling on toy-avg: ")
    assert "max_iter=2" in warning and "C=" in warning and "train.lasso_max_iter" in warning


# ---------------------------------------------------------------- 6. version, models, ls


def test_version(capsys):
    from featstore import __version__

    assert cli_main(["--version"]) == 0
    line = capsys.readouterr().out.strip()
    spark = pins(current_lock() or "requirements.lock")["pyspark"]
    assert line.startswith(f"featstore {__version__} (python ") and f"pyspark {spark}," in line


def test_models_measures_the_keras_model(capsys):
    assert cli_main(["models", "mobilenetv2", "vgg16", "--json"]) == 0
    rows = {r["model"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    # Keras' own model summaries: 2,257,984 and 14,714,688 parameters without the top
    assert rows["mobilenetv2"]["params"] == 2_257_984
    assert rows["vgg16"]["params"] == 14_714_688
    assert rows["vgg16"]["default_layer"] == "block5_pool"
    assert rows["vgg16"]["input_hw"] == [224, 224]
    # published: VGG16's conv layers 15.35 GMACs, MobileNetV2 (1.0, 224) 300 M MACs
    assert rows["vgg16"]["flops"] == pytest.approx(2 * 15.35e9, rel=0.01)
    assert rows["mobilenetv2"]["flops"] == pytest.approx(2 * 300e6, rel=0.03)


def test_models_for_every_base_reads_the_generated_table_without_keras():
    """``featstore models`` answers for every base from featstore/model_layers.json's counts
    (no Keras import: under a second here, 101 s when it built every base), and those counts
    are what building the base measures (a small base checked here)."""
    import subprocess
    import sys

    from featstore import modelspecs
    from featstore.models import describe_base

    code = (
        "import sys, json; from jobs.cli import main; rc = main(['models', '--json']); "
        "print(json.dumps({'rc': rc, 'keras': 'keras' in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    ).stdout
    *rows, last = out.strip().splitlines()
    assert json.loads(last) == {"rc": 0, "keras": False}
    got = {r["model"]: r for r in map(json.loads, rows)}
    assert sorted(got) == sorted(modelspecs.known_models())
    assert got["mobilenetv2"] == describe_base("mobilenetv2", use_table=False)


def test_models_at_another_size_builds_the_base_and_says_so(capsys):
    assert cli_main(["models", "mobilenetv2", "--input-size", "64x64"]) == 0
    out, err = capsys.readouterr()
    assert "[1/1] building mobilenetv2 at 64x64" in err
    assert "mobilenetv2" in out.splitlines()[1] and "64x64" in out.splitlines()[1]


def test_ls_and_describe_take_store_as_option_or_positional(fake_store, capsys):
    def out(argv: list[str]) -> tuple[int, str]:
        rc = cli_main(argv)
        return rc, capsys.readouterr().out

    rc, positional = out(["ls", str(fake_store)])
    assert rc == 0 and "toy-avg" in positional
    assert out(["ls", "--store", str(fake_store)]) == (0, positional)
    rc, described = out(["describe", str(fake_store), "toy-avg", "--json"])
    assert rc == 0 and json.loads(described)["name"] == "toy-avg"
    assert out(["describe", "--store", str(fake_store), "toy-avg", "--json"]) == (0, described)
    assert cli_main(["describe", "--store", str(fake_store)]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("featstore:")]
    assert "with --store, expected a table or feature set NAME" in line


# ---------------------------------------------------------------- 5. --config by name


def test_config_by_name_from_any_folder(tmp_path, monkeypatch):
    from featstore import config

    monkeypatch.chdir(tmp_path)
    for name in ("train.yaml", "conf/train.yaml"):
        cfg = config.load_config(name)
        assert "multilabel" in cfg.train.models  # conf/train.yaml
        assert cfg.spark.conf["spark.python.worker.reuse"] == "true"  # its base.yaml
    own = tmp_path / "train.yaml"  # a file of that name here wins, and may extend base.yaml
    own.write_text("extends: base.yaml\ntrain:\n  models: [forest]\n")
    cfg = config.load_config("train.yaml")
    assert cfg.train.models == ("forest",) and cfg.spark.conf["spark.python.worker.reuse"]
    with pytest.raises(
        config.ConfigError,
        match=r"config file not found: nosuch.yaml \(looked "
        r"in .* and in featstore's own configs .*base.yaml",
    ):
        config.load_config("nosuch.yaml")


def test_no_silent_empty_config_without_base_yaml(tmp_path, monkeypatch):
    from featstore import config

    monkeypatch.setattr(config, "CONF_DIR", tmp_path / "nowhere")
    with pytest.raises(config.ConfigError, match=r"default config .*base.yaml is missing"):
        config.load_config(None)


# ---------------------------------------------------------------- 2. quiet


def test_tensorflow_start_up_lines_are_filtered_and_others_kept():
    code = (
        "import os\n"
        "from featstore.quiet import filtered_stderr\n"
        "with filtered_stderr():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR\\n')\n"
        "    os.write(2, b'I0000 00:00:1796181513.265812   30362 port.cc:153] oneDNN custom "
        "operations are on. You may see...\\n')\n"
        "    os.write(2, b'I0000 00:00:1796181513.266454   30362 cudart_stub.cc:31] Could not "
        "find cuda drivers on your machine, GPU will not be used.\\n')\n"
        "    os.write(2, b'a real problem\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, cwd=REPO, check=True
    )
    assert proc.stderr.decode().splitlines() == ["a real problem", "after"]
