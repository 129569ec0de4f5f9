"""What every job shares: common flags, logging, config loading, exit codes, error handling."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

from featstore import errors, quiet
from featstore.config import Config, load_config
from featstore.errors import FeatstoreError, InputError

EXIT_OK = 0
EXIT_IMAGE_ERRORS = 1  # finished; some images were recorded in an errors table
EXIT_BAD_INPUT = 2  # bad input or configuration; nothing written
EXIT_FAILED = 3  # the job broke (a Spark task, the cluster, a bug); the stage did not commit

# A featstore error raised inside a Spark task reaches the driver inside the text of a
# PythonException / Py4JJavaError, as "featstore.errors.ConfigError: <message>".
_TASK_ERROR = re.compile(r"featstore\.errors\.(\w+): ([^\n]+)")
# The last "SomeError: message" line of a (remote) traceback: what actually went wrong.
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): (.+)$", re.MULTILINE)

logger = logging.getLogger("featstore")


def add_common(parser: argparse.ArgumentParser, *, spark: bool = True) -> None:
    parser.add_argument("--config", help="YAML config (default conf/base.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. extract.model=resnet50 (repeatable)",
    )
    if spark:
        parser.add_argument(
            "--master",
            help="Spark master for local runs (default local[*]); "
            "under spark-submit the master given there is used",
        )
        parser.add_argument(
            "--conf",
            dest="spark_conf",
            action="append",
            default=[],
            metavar="K=V",
            help="Spark setting passed to the session (repeatable)",
        )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (like logging's
    lastResort), not the stream of the first call: a job run in-process after its caller swapped
    stderr (a notebook, pytest's capture) still logs there."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    if not any(getattr(h, "_featstore", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler._featstore = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "absl", "matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # library noise (TensorFlow/absl/XLA/CUDA, Spark's JVM start-up) off unless -v: set in the
    # environment before anything heavy is imported, inherited by the Python workers
    quiet.configure(verbose)


def config_from_args(args: argparse.Namespace, **direct: Any) -> Config:
    return load_config(args.config, args.overrides, **direct)


def spark_conf_from_args(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in getattr(args, "spark_conf", []) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--conf {item!r}: expected key=value")
        out[key] = value
    return out


class SparkProvider:
    """Creates the SparkSession lazily, so bad input is reported before Spark starts."""

    def __init__(self, args: argparse.Namespace, spark: Any = None) -> None:
        self.args = args
        self._spark = spark

    def __call__(self, cfg: Config) -> Any:
        if self._spark is None:
            from jobs.spark import get_spark

            self._spark = get_spark(
                cfg.spark,
                master=getattr(self.args, "master", None),
                extra_conf=spark_conf_from_args(self.args),
            )
        return self._spark


def run_guarded(fn: Callable[[], int]) -> int:
    """Run a job body; map featstore errors to one line on stderr and an exit code."""
    try:
        return fn()
    except InputError as exc:
        logger.debug("bad input", exc_info=True)
        print(f"featstore: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FeatstoreError as exc:
        logger.debug("failed", exc_info=True)
        print(f"featstore: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            "featstore: interrupted; nothing was committed by the stage in progress",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # a Spark task, the cluster, or a bug: not the user's input
        found = _TASK_ERROR.findall(str(exc))
        if found:  # a featstore error raised on an executor: its own line is the message
            kind, message = found[-1]
            logger.debug("failed in a Spark task", exc_info=True)
            print(f"featstore: error: in a Spark task: {message.strip()}", file=sys.stderr)
            cls = getattr(errors, kind, FeatstoreError)  # the class hierarchy says which
            bad_input = isinstance(cls, type) and issubclass(cls, InputError)
            return EXIT_BAD_INPUT if bad_input else EXIT_FAILED
        from featstore.causes import root_cause

        logger.debug("job failed", exc_info=True)  # the whole trace: with -v
        root = root_cause(exc)
        if root:  # the disk, a permission, memory, a worker: the one line that names it
            print(
                f"featstore: error: the job failed: {root}; the stage in progress committed "
                "nothing; fix that and re-run (it resumes from what was committed); -v shows "
                "the whole trace",
                file=sys.stderr,
            )
            return EXIT_FAILED
        causes = _ERROR_LINE.findall(str(exc))
        cause = (
            f"{causes[-1][0]}: {causes[-1][1].strip()}"
            if causes
            else next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        )
        print(
            f"featstore: error: the job failed ({type(exc).__name__}: {cause[:300]}); "
            "the stage in progress committed nothing; a re-run resumes from what was "
            "committed (extract chunks, train cells); -v shows the whole trace",
            file=sys.stderr,
        )
        return EXIT_FAILED
