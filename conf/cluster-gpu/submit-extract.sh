#!/usr/bin/env bash
# Example: extract VGG16 block5_pool features of the full CelebA store on a GPU cluster.
# The featstore package (and its pinned dependencies) must be installed on every node, or shipped
# as a packed virtual environment (see README "Running on a cluster").
set -euo pipefail
STORE=${STORE:-/shared/featstore/celeba}
spark-submit \
  --master "${MASTER:-yarn}" \
  --deploy-mode client \
  --properties-file conf/cluster-gpu/spark-defaults.conf \
  --num-executors "${NUM_GPUS:-4}" \
  --files conf/cluster-gpu/get_gpus_resources.sh \
  jobs/extract.py --config conf/celeba.yaml --store "$STORE" \
  --model vgg16 --layers block5_pool --pooling avg --input-size native --precision bfloat16 \
  --batch-size 256 --set extract.decode_workers=0
