"""featstore.config: YAML + --set overrides -> frozen typed dataclasses."""

from __future__ import annotations

import pytest

from featstore.config import load_config
from featstore.errors import ConfigError


def test_base_and_overrides(tmp_path):
    cfg = load_config(
        None,
        [
            "extract.model=resnet50",
            "extract.layers=conv4_block6_out,conv5_block3_out",
            "spark.conf.spark.executor.memory=4g",
            "ingest.overwrite=true",
        ],
    )
    assert cfg.extract.model == "resnet50"
    assert cfg.extract.layers == ("conv4_block6_out", "conv5_block3_out")
    assert cfg.spark.conf["spark.executor.memory"] == "4g"
    assert cfg.spark.conf["spark.python.worker.reuse"] == "true"  # from conf/base.yaml
    assert cfg.ingest.overwrite is True
    with pytest.raises(AttributeError):
        cfg.extract.model = "x"  # frozen


def test_extends_and_direct_flags_win_over_file(tmp_path):
    (tmp_path / "parent.yaml").write_text("extract:\n  model: vgg19\n  pooling: max\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\nextract:\n  pooling: flatten\n")
    cfg = load_config(
        child, ["extract.batch_size=8"], extract={"model": "xception", "pooling": None}
    )
    assert (cfg.extract.model, cfg.extract.pooling, cfg.extract.batch_size) == (
        "xception",
        "flatten",
        8,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["extract.modle=vgg16"], "unknown key 'modle'"),
        (["extract.batch_size=many"], "extract.batch_size: expected an integer"),
        (["nokey"], "expected key=value"),
        (["ingest.overwrite=maybe"], "expected true or false"),
    ],
)
def test_bad_overrides_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extract:\n  model: [vgg16\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
