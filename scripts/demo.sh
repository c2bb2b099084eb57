#!/usr/bin/env bash
# The main job, from a fresh machine: set up, build the bundled digits example into ONE executable
# (dist/digits), run it on a sample image from an empty directory with no Python on PATH, then
# measure it on this machine (size, cold/warm start, peak memory, latency) with `edgebundle test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
eb=.venv/bin/edgebundle

mkdir -p dist
$eb build tests/fixtures/models/digits_float.tflite --recipe digits -o dist/digits

echo
echo "== dist/digits on a held-out sample (empty directory, no Python on PATH)"
run_dir=$(mktemp -d)
trap 'rm -rf "$run_dir"' EXIT
cp tests/fixtures/digits/sample_7.png "$run_dir/"
(cd "$run_dir" && env -i PATH=/nonexistent "$OLDPWD/dist/digits" sample_7.png)
file dist/digits 2>/dev/null || true

echo
echo "== size, start-up, memory and latency on this machine"
$eb test dist/digits --runs 10 --json-out dist/digits.test.json
