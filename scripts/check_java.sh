#!/usr/bin/env bash
# Spark 3.5 runs on Java 8/11/17, Spark 4.x on 17/21; both locks are tested on Java 17.
set -u
if ! command -v java >/dev/null 2>&1; then
  echo "error: java not found on PATH; featstore needs Java 17 for Spark (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2
  exit 2
fi
ver=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
major=${ver%%.*}
if [ "$major" != "17" ]; then
  echo "error: found Java $ver, featstore needs Java 17 for Spark 3.5 and 4.x (set JAVA_HOME / PATH to a Java 17)" >&2
  exit 2
fi
