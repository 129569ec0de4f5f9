"""README's command lines are real: every flag of the command table exists, the cluster
section's spark-submit lines parse, and their chain holds (the feature set conf/celeba.yaml's
extract writes is the one the reduce line names, and conf/train.yaml trains on what that reduce
writes), checked by the jobs' own --dry-run on a small store: no Spark, no model built."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from featstore import store
from featstore.modelspecs import HDF5_SIGNATURE, get_spec
from jobs.cli import build_parser
from jobs.cli import main as cli_main
from tests.storefakes import write_feature_set
from tests.test_cli import fake_store  # noqa: F401  (the fixture)

README = Path(__file__).resolve().parents[1] / "README.md"


def _subparsers() -> dict:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


def _bash_commands() -> list[list[str]]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = " ".join(blocks).replace("\\\n", " ").split("\n")
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(shlex.split(line))
    assert lines
    return out


def _submit_lines() -> list[tuple[str, list[str]]]:
    """(stage, arguments) of every ``spark-submit ... jobs/X.py ARGS`` / ``python jobs/X.py``."""
    found = []
    for argv in _bash_commands():
        scripts = [i for i, a in enumerate(argv) if re.fullmatch(r"jobs/\w+\.py", a)]
        if argv[0] in ("spark-submit", "python") and scripts:
            i = scripts[0]
            found.append((Path(argv[i]).stem, argv[i + 1 :]))
    return found


def test_every_flag_of_the_command_table_exists():
    rows = [ln for ln in README.read_text().splitlines() if ln.startswith("| `featstore ")]
    table = [
        cmd
        for ln in rows
        for cmd in re.findall(r"`(featstore [^`]*)`", re.split(r"(?<!\\)\|", ln)[1])
    ]
    assert len(table) >= 10
    commands = _subparsers()
    for part in table:
        words = part.split()
        if words[1] == "--version":
            assert cli_main(["--version"]) == 0
            continue
        sub = commands[words[1]]
        known = {s for a in sub._actions for s in a.option_strings}
        for flag in re.findall(r"--[a-z][a-z-]*", part):
            assert flag in known, f"README: {words[1]} has no {flag}"


def test_the_cluster_lines_parse():
    lines = _submit_lines()
    assert [stage for stage, _ in lines] == ["ingest", "extract", "reduce", "train", "report"]
    parser = build_parser()
    for stage, args in lines:
        ns = parser.parse_args([stage, *args])
        assert ns.command == stage
        if getattr(ns, "config", None):
            from featstore.config import load_config

            load_config(ns.config)  # the config files named there exist and load


def _weights_in_keras_cache(home: Path, model: str) -> None:
    path = home / "models" / get_spec(model).imagenet_weights_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HDF5_SIGNATURE + b"\0" * 64)  # enough for the checks before Spark


@pytest.mark.parametrize(
    ("extract_cfg", "train_cfg"),
    [
        ("conf/celeba.yaml", "conf/train.yaml"),
        ("conf/seed_male_8k.yaml", "conf/seed_male_8k.yaml"),
    ],
)
def test_the_configs_chain_extract_reduce_and_train(
    fake_store,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
    extract_cfg,
    train_cfg,
):
    import shutil

    from featstore.config import load_config

    root = tmp_path / "store"
    shutil.copytree(fake_store, root)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    _weights_in_keras_cache(tmp_path / "keras", load_config(extract_cfg).extract.model)
    assert cli_main(["extract", "--config", extract_cfg, "--store", str(root), "--dry-run"]) == 0
    (name,) = re.findall(r"^feature set: (\S+) ", capsys.readouterr().out, re.M)
    reduce_line = dict(_submit_lines())["reduce"]
    if extract_cfg == "conf/celeba.yaml":  # README's reduce line names what extract writes
        assert reduce_line[reduce_line.index("--feature-set") + 1] == name
    dims = load_config(None).reduce.dims
    wanted = load_config(train_cfg).train.feature_sets
    assert set(wanted) <= {name, *(f"{name}-pca{k}" for k in dims)}
    ids = [f"{i:06d}.jpg" for i in range(1, 13)]
    splits = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    import numpy as np

    for fs in wanted:
        write_feature_set(root, fs, ids, splits, np.zeros((12, 4), np.float32))
    assert store.check_feature_set(root, wanted[0])
    assert (
        cli_main(
            [
                "train",
                "--config",
                train_cfg,
                "--store",
                str(root),
                "--dry-run",
                "--set",
                "train.attributes=Male",
            ]
        )
        == 0
    )
    assert "nothing was run or written" in capsys.readouterr().out
