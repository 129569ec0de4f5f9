#!/usr/bin/env bash
# Spark GPU discovery script: prints the addresses of this node's NVIDIA GPUs as Spark expects,
# e.g. {"name": "gpu", "addresses": ["0","1"]}. (The same as Spark's examples/src/main/scripts.)
ADDRS=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e ':a' -e 'N' -e'$!ba' -e 's/\n/","/g')
echo "{\"name\": \"gpu\", \"addresses\":[\"$ADDRS\"]}"
