"""Library noise off by default, back with ``-v``: in the driver and in every Python worker.

What the libraries print and how each is silenced (measured on TF 2.21 / Keras 3.15, CPU):

- TensorFlow / XLA C++ logs after start-up (``E0000 ... cuda_platform.cc ... failed call to
  cuInit``, oneDNN, device placement): ``TF_CPP_MIN_LOG_LEVEL=3``, read when TensorFlow (or
  jaxlib's XLA) loads, so it must be in the environment *before* the import.
- absl's C++ lines written *before* TensorFlow calls ``absl::InitializeLog()`` ("WARNING: All
  log messages before absl::InitializeLog() is called are written to STDERR", then
  ``I0000 ... port.cc ... oneDNN custom operations are on`` and ``I0000 ... cudart_stub.cc ...
  Could not find cuda drivers``): no environment variable or flag reaches them (abseil-cpp issue
  #1570, tensorflow PR #102212), so while ``tensorflow`` is imported file descriptor 2 is sent
  to a temporary file, and afterwards every line of it that is not one of those known start-up
  lines (:data:`NOISE`) is written back to stderr: nothing else is lost.
- Python-side absl and TensorFlow loggers: set to ERROR.
- Spark's JVM start-up warnings (hostname, native-hadoop, UI port, "Setting default log level"):
  a log4j2 configuration at ERROR for the driver JVM (:data:`LOG4J2`, see ``jobs/spark.py``).

The environment is inherited by Spark's Python workers in local mode (the JVM is started from
this process); on a cluster ``jobs/spark.py`` passes the same variables as
``spark.executorEnv.*``. ``FEATSTORE_QUIET=1`` in a worker's environment makes
``import featstore`` install the import filter there too. ``-v`` sets ``FEATSTORE_QUIET=0`` and
touches nothing.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

QUIET_ENV = "FEATSTORE_QUIET"

#: Environment for quiet library start-up (set only where the user has not set them).
ENV: dict[str, str] = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow and XLA (jaxlib reads it too) C++ logging
    "GRPC_VERBOSITY": "ERROR",  # gRPC, loaded by TensorFlow
}

#: The start-up lines of TensorFlow's import that nothing else can silence (see the module
#: docstring); only these are dropped from what the import wrote to stderr.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ (port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized))"
)

LOG4J2 = Path(__file__).resolve().parent / "log4j2-quiet.properties"

_LOGGERS = ("absl", "tensorflow", "jax", "jax._src", "h5py", "py4j", "matplotlib", "PIL")


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV) == "1"


def configure(verbose: bool) -> None:
    """Called by the command line before anything heavy is imported."""
    if verbose:
        os.environ[QUIET_ENV] = "0"
        return
    os.environ[QUIET_ENV] = "1"
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    install()


def worker_env() -> dict[str, str]:
    """What Spark's executors need in their environment to be as quiet as the driver."""
    if not is_quiet():
        return {QUIET_ENV: "0"}
    return {QUIET_ENV: "1", **{k: os.environ.get(k, v) for k, v in ENV.items()}}


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Send fd 2 to a temporary file inside the block; then write back every line of it that is
    not start-up noise (:data:`NOISE`)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                ln
                for ln in tmp.read().decode(errors="replace").splitlines(keepends=True)
                if not NOISE.match(ln)
            ]
            if kept:
                os.write(2, "".join(kept).encode())


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with filtered_stderr():
            self._loader.exec_module(module)
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the import of the ``tensorflow`` package (whoever imports it: Keras, petastorm,
    featstore) in :func:`filtered_stderr`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Install the import filter (once per process; harmless when TensorFlow is not used)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
