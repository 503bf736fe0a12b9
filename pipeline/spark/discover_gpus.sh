#!/usr/bin/env bash
# Spark's GPU discovery script (spark.worker.resource.gpu.discoveryScript): prints the resource JSON Spark
# reads, e.g. {"name":"gpu","addresses":["0","1"]}.
#
#   SPARK_INFERENCE_BENCH_EMULATE_GPUS=N  N fake addresses 0..N-1, so GPU scheduling can be exercised on a
#                                         machine without GPUs (the tasks still compute on the CPU)
#   otherwise                             the indices nvidia-smi reports
#   neither                               an empty list (Spark then refuses a worker or executor that asks for
#                                         GPUs, naming the resource, rather than scheduling on none)
#
# Spark runs it in the environment of the process that discovers: the driver JVM for local-cluster (its
# workers live in it), the Worker JVM for standalone. Keep it dependency-free: bash and nvidia-smi only.
set -u

addresses=()
if [[ -n "${SPARK_INFERENCE_BENCH_EMULATE_GPUS:-}" ]]; then
  count="${SPARK_INFERENCE_BENCH_EMULATE_GPUS}"
  if ! [[ "${count}" =~ ^[0-9]+$ ]]; then
    echo "discover_gpus.sh: SPARK_INFERENCE_BENCH_EMULATE_GPUS=${count} is not a non-negative integer" >&2
    exit 1
  fi
  for ((i = 0; i < count; i++)); do
    addresses+=("${i}")
  done
elif command -v nvidia-smi >/dev/null 2>&1; then
  if output="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>&1)"; then
    while IFS= read -r line; do
      line="${line//[[:space:]]/}"
      [[ -n "${line}" ]] && addresses+=("${line}")
    done <<<"${output}"
  else
    # No driver or no device: say why on stderr, report no GPUs.
    echo "discover_gpus.sh: nvidia-smi failed: ${output}" >&2
  fi
fi

json=""
for address in "${addresses[@]+"${addresses[@]}"}"; do
  json+="${json:+,}\"${address}\""
done
printf '{"name":"gpu","addresses":[%s]}\n' "${json}"
