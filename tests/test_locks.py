"""The two locks: the environment is exactly one of them, petastorm imports where its lock pins
it, and pyproject.toml's ranges admit both."""

from __future__ import annotations

import re

import tomllib
from packaging.requirements import Requirement

from featstore import feed
from tests.locks import LOCKS, REPO, canonical, current_lock, installed, pins


def test_the_environment_is_exactly_one_of_the_locks():
    lock = current_lock()
    assert lock is not None, "the installed pyspark/pyarrow/numpy/pandas match neither lock"
    wrong = {
        name: (want, installed(name))
        for name, want in pins(lock).items()
        if installed(name) != want
    }
    assert wrong == {}, f"{lock.name}: pinned (want, installed) differ"


def test_petastorm_imports_where_the_lock_pins_it():
    """On the Spark 3.5 lock petastorm must import (a broken environment fails here instead of
    skipping the petastorm tests); on the Spark 4 lock it is absent and the feed goes native."""
    if "petastorm" in pins(current_lock() or "requirements.lock"):
        assert feed.petastorm_available()
        assert feed.resolve_engine("auto") == "petastorm"
    else:
        assert installed("petastorm") is None
        assert feed.resolve_engine("auto") == "native"


def test_pyproject_ranges_admit_both_locks():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = [Requirement(d) for d in project["dependencies"]]
    deps += [Requirement(d) for d in project["optional-dependencies"]["test"]]
    for lock in LOCKS:
        p = pins(lock)
        outside = {
            str(r): p.get(canonical(r.name))
            for r in deps
            if p.get(canonical(r.name)) is None or p[canonical(r.name)] not in r.specifier
        }
        assert outside == {}, f"{lock}: pins outside pyproject.toml's ranges"


def test_the_petastorm_extra_fits_the_spark35_lock_only():
    extra = [
        Requirement(d)
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["petastorm"]
    ]

    def fits(lock: str) -> bool:
        p = pins(lock)
        return all(
            p.get(canonical(r.name)) in r.specifier
            for r in extra
            if canonical(r.name) != "petastorm"
        )

    assert fits("requirements.lock") and not fits("requirements-spark4.lock")
    assert "petastorm" in pins("requirements.lock")
    assert "petastorm" not in pins("requirements-spark4.lock")


def test_both_locks_pin_the_same_tensorflow_and_keras():
    a, b = pins("requirements.lock"), pins("requirements-spark4.lock")
    assert [a["tensorflow"], a["keras"]] == [b["tensorflow"], b["keras"]]
    assert a["pyspark"].startswith("3.5.") and b["pyspark"].startswith("4.")
    assert b["numpy"].startswith("2.")


def test_every_lock_named_in_the_readme_makefile_and_ci_exists():
    text = "".join((REPO / f).read_text() for f in ("README.md", "Makefile", ".ci/run"))
    names = set(re.findall(r"\bLOCK=(\w[\w.-]*)", text))
    assert "spark4" in names
    for name in names:
        assert (REPO / f"requirements-{name}.lock").is_file(), f"LOCK={name}: no such lock"
