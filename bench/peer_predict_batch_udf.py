"""The reference a Spark user writes by hand: ``pyspark.ml.functions.predict_batch_udf``.

    python bench/peer_predict_batch_udf.py --store STORE --out OUT [--model resnet50]
        [--input-size 112x96] [--batch-size 64] [--cores 2] [--seed 0]

Reads the store's images table, decodes each JPEG with PIL inside the predict function, runs
``model.predict`` on the batch and writes ``image_id, embedding`` to ``OUT`` (Parquet). The
input is repartitioned to the core count, as the Spark docs' examples do. The model is
featstore's own extractor (``featstore.models.build_extractor``: the same seeded random weights,
uint8 in, preprocessing inside), so both give the same numbers; everything else — decode,
batching, threads, Spark plumbing — is the plain hand-written way. Used by
bench/bench_extract_peer.py; prints one JSON line of timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def make_predict_fn(model: str, hw: tuple[int, int], seed: int):
    def make():
        import io

        import numpy as np
        from PIL import Image

        from featstore import models

        net = models.build_extractor(
            models.get_spec(model), input_hw=hw, weights=models.WeightsInfo("random"), seed=seed
        )

        def predict(content: np.ndarray) -> np.ndarray:
            h, w = hw
            x = np.stack(
                [
                    np.asarray(
                        Image.open(io.BytesIO(b))
                        .convert("RGB")
                        .resize((w, h), Image.Resampling.BILINEAR),
                        dtype=np.uint8,
                    )
                    for b in content
                ]
            )
            return net.predict(x, batch_size=len(x), verbose=0)

        return predict

    return make


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", default="112x96")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import SparkSession
    from pyspark.sql.types import ArrayType, FloatType

    spark = (
        SparkSession.builder.master(f"local[{a.cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    t_spark = time.perf_counter()
    hw = tuple(int(v) for v in a.input_size.split("x"))
    embed = predict_batch_udf(
        make_predict_fn(a.model, hw, a.seed),
        return_type=ArrayType(FloatType()),
        batch_size=a.batch_size,
    )
    images = spark.read.parquet(os.path.join(a.store, "images")).repartition(a.cores)
    images.select("image_id", embed("content").alias("embedding")).write.parquet(
        a.out, mode="overwrite"
    )
    t_pass = time.perf_counter()
    spark.stop()
    print(
        json.dumps(
            {
                "start_s": t_spark - T0,
                "pass_s": t_pass - t_spark,
                "total_s": time.perf_counter() - T0,
            }
        )
    )


if __name__ == "__main__":
    main()
