"""featstore as a user installs it: the wheel, non-editable, in a fresh virtual environment built
from this environment's lock (requirements.lock or requirements-spark4.lock, tests/locks.py),
run from an empty folder: its packaged conf/ is used (base.yaml's Spark
settings, --config by name) and ``featstore demo --n 200`` runs the whole chain with no library
noise on the console.

The lock's wheels come from a local wheelhouse (``$FEATSTORE_WHEELHOUSE``, default
``~/.cache/featstore/wheelhouse``), filled once per lock with ``pip wheel -r LOCK`` (the only
step that may need the network; pip's own cache serves what it can), so later runs install
offline with ``--no-index``. Both locks share the wheelhouse (every pin is exact, so each install
takes its own versions; a stamp per lock says it is complete). Measured on the 2-core machine:
install from the wheelhouse ~70 s, demo ~70 s."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.locks import current_lock

REPO = Path(__file__).resolve().parents[1]
LOCK = current_lock() or REPO / "requirements.lock"
WHEELHOUSE = Path(
    os.environ.get("FEATSTORE_WHEELHOUSE", Path.home() / ".cache" / "featstore" / "wheelhouse")
)
# What the libraries print when they are not silenced (TensorFlow/absl/XLA C++ logs, Spark's
# log4j lines and its "Setting default log level" banner, Python warnings).
LIBRARY_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:|absl::InitializeLog|^\d\d/\d\d/\d\d \d\d:\d\d:\d\d "
    r"(INFO|WARN|ERROR)|Setting default log level|To adjust logging level|"
    r"Warning: |cuInit|oneDNN"
)

pytestmark = pytest.mark.slow


def _sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def _wheelhouse() -> Path:
    stamp = WHEELHOUSE / f".lock-{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]}"
    if not stamp.is_file():
        done = _sh(
            [sys.executable, "-m", "pip", "wheel", "-q", "-r", str(LOCK), "-w", str(WHEELHOUSE)],
            timeout=1800,
        )
        if done.returncode != 0:
            pytest.skip(
                f"cannot fill the wheelhouse {WHEELHOUSE} from the lock (offline and "
                f"not filled before?): {done.stderr.strip()[-500:]}"
            )
        stamp.write_text("complete\n")
    return WHEELHOUSE


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment a user's shell would have: no PYTHONPATH into the repository, and none
    of the settings the test session or featstore itself put in."""
    drop = (
        "PYTHONPATH",
        "PYSPARK_PYTHON",
        "PYSPARK_DRIVER_PYTHON",
        "TF_CPP_MIN_LOG_LEVEL",
        "GRPC_VERBOSITY",
        "FEATSTORE_QUIET",
        "VIRTUAL_ENV",
        "KERAS_BACKEND",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_installs_and_runs_the_demo_from_an_empty_folder(tmp_path):
    wheels = _wheelhouse()
    src = tmp_path / "src"  # build from a copy: nothing (build/, *.egg-info) lands in the repo
    for name in ("featstore", "jobs", "conf"):
        shutil.copytree(
            REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    built = _sh(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        ],
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("featstore-*.whl")

    venv = tmp_path / "venv"
    assert _sh([sys.executable, "-m", "venv", str(venv)], timeout=300).returncode == 0
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--find-links",
        str(wheels),
    ]
    done = _sh([*pip, "-r", str(LOCK)], timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _sh([*pip, "--no-deps", str(wheel)], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    run = tmp_path / "empty"
    run.mkdir()
    env = _clean_env(venv)
    probe = _sh(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import featstore, featstore.config as c; cfg = c.load_config('train.yaml'); "
            "print(featstore.__file__); print(c.CONF_DIR); "
            "print(cfg.spark.conf['spark.python.worker.reuse'], ','.join(cfg.train.models))",
        ],
        cwd=run,
        env=env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    module, conf_dir, settings = probe.stdout.strip().splitlines()
    site = venv / "lib"
    assert Path(module).is_relative_to(site) and Path(conf_dir) == Path(module).parent / "conf"
    assert settings == "true lasso,forest,dense,multilabel"  # base.yaml via conf/train.yaml

    # one base: this test is about the installed package, not the demo's base comparison
    demo = _sh(
        [
            str(venv / "bin" / "featstore"),
            "demo",
            "--n",
            "200",
            "--set",
            "compare.bases=[resnet50]",
        ],
        cwd=run,
        env=env,
        timeout=900,
    )
    console = (demo.stdout + demo.stderr).splitlines()
    assert demo.returncode == 0, "\n".join(console[-40:])
    assert (run / "demo" / "report" / "index.html").is_file()
    assert any(ln.startswith("[train   ]") and "fits" in ln for ln in console)
    assert any(ln.startswith("demo finished in ") for ln in console)
    noise = [ln for ln in console if LIBRARY_LINE.search(ln)]
    assert noise == []
