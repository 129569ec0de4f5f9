"""Write featstore/model_layers.json: the layer names of every registered conv base, from Keras,
and what ``featstore models`` shows of each at its default input size (parameters, FLOPs).

    .venv/bin/python scripts/gen_model_layers.py [--check]

The command line checks a layer name against this table before anything heavy is imported
(featstore.modelspecs.known_layers). Run this after upgrading Keras or adding a model to the
registry; ``--check`` exits 1 when the table on disk differs from what Keras builds (a test runs
the same comparison for a few small models). Each base is built once at its default input size
with random weights (layer names do not depend on the input size), on CPU: a few minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_table(names: list[str] | None = None) -> dict:
    import keras

    from featstore import models

    out: dict[str, list[str]] = {}
    counts: dict[str, dict] = {}
    for name in names or models.known_models():
        spec = models.get_spec(name)
        base = models.build_base(
            spec, input_hw=spec.default_hw, weights=models.WeightsInfo("random")
        )
        out[name] = [layer.name for layer in base.layers]
        counts[name] = models.base_facts(spec, spec.default_hw, base)
        logging.info("%s: %d layers", name, len(out[name]))
        del base
        keras.backend.clear_session()
    return {"keras_version": keras.version(), "models": out, "counts": counts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the table on disk")
    p.add_argument("--out", default=None, help="default: featstore/model_layers.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from featstore.modelspecs import LAYER_TABLE

    path = Path(args.out) if args.out else LAYER_TABLE
    table = build_table()
    if args.check:
        on_disk = json.loads(path.read_text())
        if on_disk != table:
            diff = sorted(
                n for n in table["models"] if on_disk["models"].get(n) != table["models"][n]
            )
            print(
                f"{path} is out of date (keras {on_disk.get('keras_version')} -> "
                f"{table['keras_version']}; models {', '.join(diff) or 'none'}): rerun "
                "scripts/gen_model_layers.py",
                file=sys.stderr,
            )
            return 1
        print(f"{path}: up to date")
        return 0
    # one model a line: small diffs when Keras renames a layer
    lines = ",\n".join(f"    {json.dumps(n)}: {json.dumps(v)}" for n, v in table["models"].items())
    counts = ",\n".join(
        f"    {json.dumps(n)}: {json.dumps(v, sort_keys=True)}" for n, v in table["counts"].items()
    )
    path.write_text(
        '{\n  "keras_version": '
        + json.dumps(table["keras_version"])
        + ',\n  "models": {\n'
        + lines
        + "\n  },\n"
        '  "counts": {\n' + counts + "\n  }\n}\n"
    )
    print(f"wrote {path}: {len(table['models'])} models, keras {table['keras_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
