#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: `fuzz/run.sh [SECONDS] [TARGET...]`
# (default 60 s each, all targets). Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Seeds come from the tests' own data; the corpus grows in
# fuzz/corpus/, crashes land in fuzz/artifacts/TARGET/ (replay one with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`), and each becomes a
# regression test in the crate it hit.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(remote_write otlp_protobuf otlp_json exposition slo_yaml promql query_http)
fi

# Seeds: one file per input, from the tests' fixtures.
seed() { mkdir -p "seeds/$1"; }
rm -rf seeds
seed exposition
cp ../tests/fixtures/python_client_metrics.txt seeds/exposition/
seed slo_yaml
cp ../tests/fixtures/slos/*.yaml ../tests/fixtures/vigil.example.yaml seeds/slo_yaml/
seed promql
n=0
grep -v '^#' ../tests/promql/corpus.promql | grep -v '^[[:space:]]*$' | while IFS= read -r expr; do
  n=$((n + 1))
  printf '%s' "$expr" > "seeds/promql/$n"
done
seed query_http
n=0
grep -v '^#' ../tests/promql/corpus.promql | grep -v '^[[:space:]]*$' | sed -n '1,100p' | while IFS= read -r expr; do
  n=$((n + 1))
  # The first byte picks the route (index mod 8): PromQL to the query routes, SQL to /api/v1/sql.
  { printf "\\x$(printf %02x $((n % 6 + 2)))"; printf '%s' "$expr"; printf '\0start=0&end=3600&step=60'; } > "seeds/query_http/$n"
done
for sql in "SELECT * FROM http_requests_total" "SELECT job, count(*) FROM http_requests_total GROUP BY job" "SELECT * FROM information_schema.tables"; do
  n=$((n + 1))
  { printf '\x00'; printf '%s' "$sql"; } > "seeds/query_http/sql$n"
done
seed otlp_json
seed otlp_protobuf
i=0
for signal in metrics traces logs; do
  # The first byte picks the signal (index mod 3) and gzip (bit 2).
  { printf "\\x$(printf %02x $i)"; cat "../tests/otlp/$signal.json"; } > "seeds/otlp_json/$signal"
  i=$((i + 1))
done
seed remote_write
printf '\x00' > seeds/remote_write/empty

cargo +nightly fuzz build -O
status=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target: ${seconds}s"
  # -rss_limit_mb: a decoder that allocates past 2 GiB on some input is a finding too.
  if ! cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1; then
    echo "!! $target found a crash: see fuzz/artifacts/$target/"
    status=1
  fi
done
exit "$status"
