"""Typed, frozen configuration loaded from conf/*.yaml with ``--set key=value`` overrides.

A config file is a YAML mapping of sections (``spark``, ``ingest``, ``extract``, ...). A file may
name a parent with ``extends: base.yaml`` (relative to itself); keys are merged section by section.
``--config NAME.yaml`` is looked up in the working folder, then among featstore's own configs
(conf/ of a checkout, shipped inside the wheel). ``--set extract.model=resnet50`` overrides one
key; values are parsed as YAML scalars and coerced to
the field's type. Unknown sections or keys are errors (a typo must not silently do nothing).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from featstore.errors import ConfigError


def _conf_dir() -> Path:
    """The configuration files featstore ships: ``featstore/conf/`` inside an installed wheel
    (package data, see pyproject.toml), ``conf/`` at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "base.yaml").is_file():
            return candidate
    return here / "conf"


CONF_DIR = _conf_dir()


def packaged_configs() -> list[str]:
    return sorted(p.name for p in CONF_DIR.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """``--config`` as given: a file relative to the working folder (or absolute), else one of
    featstore's own configs by name (``train.yaml`` or ``conf/train.yaml``). ConfigError naming
    both places when neither has it."""
    given = Path(path).expanduser()
    if given.is_file():
        return given.resolve()
    if not given.is_absolute():
        name = given.parts[1:] if given.parts[:1] == ("conf",) else given.parts
        packaged = CONF_DIR.joinpath(*name) if name else CONF_DIR
        if packaged.is_file():
            return packaged.resolve()
        raise ConfigError(
            f"config file not found: {path} (looked in {Path.cwd()} and in "
            f"featstore's own configs {CONF_DIR}: "
            f"{', '.join(packaged_configs()) or 'none'})"
        )
    raise ConfigError(f"config file not found: {given}")


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "featstore"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestConfig:
    source: str = "celeba"  # celeba | folder
    path: str = ""
    rows_per_file: int = 20_000  # images per Parquet file (~10 KB each: ~200 MB files)
    row_group_mb: int = 64  # Parquet row-group size: large sequential reads for scans
    split_seed: int = 0  # folder source: seed of the stratified split
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    overwrite: bool = False


@dataclass(frozen=True)
class EmbedConfig:
    """What to embed with. Hashable: it keys the per-process embedder cache."""

    model: str = "vgg16"
    #: Layer names; empty = the model's default (last conv block). Several = one pass, concatenated.
    layers: tuple[str, ...] = ()
    pooling: str = "avg"
    #: "imagenet" (Keras cache, never downloaded), "random" (seeded), or a weights file path.
    weights: str = "imagenet"
    #: "default", "native" (CelebA 218x178) or "HxW".
    input_size: str = "default"
    #: Images per forward pass (every pass has this shape; the last one is padded).
    batch_size: int = 64
    #: "float32", "bfloat16" or "float16" (mixed precision; the output is always float32).
    precision: str = "float32"
    #: 0: decode in this process on one background thread overlapping the model;
    #: N > 0: a pool of N worker processes (threads did not scale in measurements).
    decode_workers: int = 0
    seed: int = 0
    #: "cpu" (Pillow, ``decode_workers``) or "gpu": nvJPEG through torchvision where torch
    #: with CUDA is present, else the CPU after one log line (featstore.gpudecode; unmeasured,
    #: not the default)
    decode: str = "cpu"

    def __post_init__(self) -> None:
        layers: Any = self.layers
        if isinstance(layers, str):
            layers = [s for s in (p.strip() for p in layers.split(",")) if s]
        object.__setattr__(self, "layers", tuple(layers))


@dataclass(frozen=True)
class ExtractConfig(EmbedConfig):
    """The extract job: the embedder's settings, inherited from
    :class:`EmbedConfig` (model, layers, pooling, weights, input_size, batch_size,
    precision, decode_workers, seed; declared once there), plus how the job runs them."""

    arrow_batch_rows: int = 512  # rows per Arrow batch into the UDF (JPEG bytes, ~10 KB each)
    partitions: int = 0  # 0: one per input file / Spark's choice
    chunk_rows: int = 50_000  # images per committed-in-staging chunk (the unit of resume)
    feature_set: str = ""  # default name: <model>-<layers>-<pooling>[-<size>][-random]
    overwrite: bool = False
    #: the backend's CPU threads per task (TensorFlow intra-op pool); 0: twice
    #: spark.task.cpus, at most the executor's cores (featstore.extract.task_cpu_threads)
    cpu_threads: int = 0
    #: build each Python worker's model while the driver plans and the input is shuffled
    warmup: bool = True


@dataclass(frozen=True)
class ReduceConfig:
    feature_set: str = ""  # the source feature set (features/<name>/)
    dims: tuple[int, ...] = (8, 16, 32, 64, 128, 256)  # one <source>-pca<k> set per k
    arrow_batch_rows: int = 2048  # rows per Arrow batch to the workers (8 KB/row at 2,048 floats)
    overwrite: bool = False


@dataclass(frozen=True)
class RetrieveConfig:
    """The retrieval evaluation (featstore/retrieval.py): nearest train images of each test
    image by embedding distance, scored on the labels."""

    feature_set: str = ""  # the feature set to evaluate (features/<name>/)
    queries: str = "test"  # split whose images are the queries
    items: str = "train"  # split searched (the same split as queries: a query never finds itself)
    metric: str = "cosine"  # cosine | l2
    k: tuple[int, ...] = (1, 5, 10)  # neighbours per query; one set of rows per k
    attributes: tuple[str, ...] = ()  # empty: every attribute (class) of the labels table
    backend: str = "faiss"  # faiss (exact IndexFlat) | numpy (blocked matrix products)
    query_block: int = 4096  # queries searched per block (bounds the driver's memory)
    overwrite: bool = False


TARGETS = ("attributes", "class")  # train.target
FOREST_SELECTIONS = ("oob", "cv")  # featstore.train.forest.SELECTIONS (not imported: sklearn)


@dataclass(frozen=True)
class GridConfig:
    feature_sets: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()  # empty: every attribute of the labels table
    models: tuple[str, ...] = (
        "lasso",
        "forest",
        "dense",
    )  # + bottleneck<k>-lasso|forest, multilabel
    train_sizes: tuple[int, ...] = (0,)  # 0: the whole train split
    seeds: tuple[int, ...] = (0,)
    folds: int = 10
    lasso_cs: int = 10
    lasso_max_iter: int = 1000  # solver iterations per lasso fit (liblinear / saga)
    forest_trees: int = 200
    forest_max_features: tuple[str, ...] = ("sqrt", "0.1", "0.3")
    # max_features chosen by out-of-bag score ("oob": one forest per candidate on all rows,
    # kept; 3 forests) or by CV ("cv": forest_folds x candidates on cv_max_rows rows + a refit)
    forest_selection: str = "oob"
    forest_folds: int = 5  # "cv" only; forests cost ~100x a lasso fit: fewer folds
    forest_max_samples: int = 20_000  # rows per tree (bootstrap sample size cap)
    dense_hidden: tuple[int, ...] = (20,)
    dense_epochs: int = 50
    dense_patience: int = 5
    dense_batch_size: int = 256
    cv_max_rows: int = 20_000  # CV on at most this many rows, then refit on all
    bootstrap: int = 1000
    # none | balanced: every probe weighs the classes by n / (2 n_class) (imbalanced attributes)
    class_weight: str = "none"
    # fixed: a row is positive when its score is > 0.5; val: the threshold that maximises the
    # balanced accuracy on the validation split (chosen there, applied to the test split)
    threshold: str = "fixed"
    # the original study's protocol: the first N images, split train/val/test by these counts
    first_n: int = 0
    custom_split: tuple[int, ...] = ()  # (train, val, test) counts within the first N
    overwrite: bool = False
    # keep every ok fit's model under results/_models (featstore.train.saved); not part of the
    # cell keys: with it on, finished cells without their model files are run again
    save_models: bool = False
    # attributes: one binary probe per attribute (CelebA, or a folder's one-hot classes);
    # class: one multi-class probe of the labels table's class column (a class-per-folder set)
    target: str = "attributes"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"train.target: expected attributes or class, got {self.target!r}")
        if self.forest_selection not in FOREST_SELECTIONS:
            raise ConfigError(
                f"train.forest_selection: expected one of "
                f"{', '.join(FOREST_SELECTIONS)}, got {self.forest_selection!r}"
            )
        if self.class_weight not in ("none", "balanced"):
            raise ConfigError(
                f"train.class_weight: expected none or balanced, got {self.class_weight!r}"
            )
        if self.threshold not in ("fixed", "val"):
            raise ConfigError(f"train.threshold: expected fixed or val, got {self.threshold!r}")


@dataclass(frozen=True)
class CompareConfig:
    """The base-comparison study (``featstore compare``, featstore/compare.py): every base is
    extracted with the ``extract`` settings (its own model name), reduced to ``reduce.dims``,
    probed with the ``train`` grid and evaluated by retrieval with the ``retrieve`` settings."""

    bases: tuple[str, ...] = ()  # conv bases of featstore.models, e.g. vgg16,resnet50
    retrieve_on: str = "all"  # which of a base's sets retrieval runs on: raw | reduced | all


@dataclass(frozen=True)
class Config:
    store: str = ""
    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    train: GridConfig = field(default_factory=GridConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    parent = data.pop("extends", None)
    if parent:
        # beside the file, else one of featstore's own (a user's file may extend base.yaml)
        beside = (path.parent / parent).resolve()
        packaged = (CONF_DIR / parent).resolve()
        target = beside if beside.is_file() or not packaged.is_file() else packaged
        base = _read_yaml(target, (*seen, path))
        return _merge(base, data)
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "conf":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["extract.model=resnet50", "spark.conf.spark.executor.memory=4g"]`` -> nested dict."""
    nested: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. extract.model=resnet50")
        parts = key.split(".")
        if parts[0] == "spark" and len(parts) > 2 and parts[1] == "conf":
            parts = ["spark", "conf", ".".join(parts[2:])]
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return nested


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return _build(tp, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return {str(k): _scalar_str(v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        return "" if value is None else str(value)
    return value


def _scalar_str(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key {unknown[0]!r}; expected one of {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, **direct: Any
) -> Config:
    """Load ``path`` (default conf/base.yaml), apply ``--set`` overrides, then ``direct`` values
    given as nested dicts by command-line flags (e.g. ``extract={"model": "resnet50"}``)."""
    if path:
        data = _read_yaml(resolve_config_path(path))
    else:
        base_path = CONF_DIR / "base.yaml"
        if not base_path.is_file():  # never silently run without base.yaml's settings
            raise ConfigError(
                f"featstore's default config {base_path} is missing: reinstall "
                "featstore (conf/ ships inside the package) or pass --config FILE"
            )
        data = _read_yaml(base_path.resolve())
    for key, value in direct.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
            if value:
                data = _merge(data, {key: value})
        elif value is not None:
            data = _merge(data, {key: value})
    data = _merge(data, parse_overrides(overrides))
    return _build(Config, data, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
