#!/usr/bin/env bash
# Builds each job's image (launcher + worker, model baked in), pushes it to
# Artifact Registry and writes the job's Flex Template spec to GCS.
#
#   PROJECT=my-project REGION=europe-west4 REPOSITORY=dataflow \
#   BUCKET=my-bucket templates/build.sh /path/to/embeddinggemma-300m
#
# The argument is the model directory to bake in (the Sentence-Transformers
# snapshot or a Keras preset). Optional: JOBS (default: all four),
# MODEL_DTYPE (default: bfloat16), TAG (default: the git commit).
set -euo pipefail
cd "$(dirname "$0")/.."

model_source=${1:?usage: templates/build.sh MODEL_DIRECTORY}
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}"
: "${REPOSITORY:?set REPOSITORY (Artifact Registry, docker format)}"
: "${BUCKET:?set BUCKET}"
tag=${TAG:-$(git rev-parse --short HEAD)}
registry="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}"

for job in ${JOBS:-stream_tag dedup_corpus train_classifier fit_clusters}; do
  image="${registry}/embgemma-${job//_/-}:${tag}"
  # The model stage does not depend on JOB: Docker builds it once.
  docker build --file templates/Dockerfile \
    --build-arg JOB="${job}" \
    --build-arg MODEL_DTYPE="${MODEL_DTYPE:-bfloat16}" \
    --build-context model_source="${model_source}" \
    --tag "${image}" .
  docker push "${image}"
  gcloud dataflow flex-template build "gs://${BUCKET}/templates/${job}.json" \
    --image "${image}" \
    --sdk-language PYTHON \
    --metadata-file "templates/${job}/metadata.json" \
    --project "${PROJECT}"
  echo "${job}: gs://${BUCKET}/templates/${job}.json (image ${image})"
done
