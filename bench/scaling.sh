#!/usr/bin/env bash
# scaling.sh measures how exactly-once throughput grows with shards on this
# machine's cores (issue 14, goal 3): idem bench at each shard count, the
# counts alternated in every round so that drift touches them alike, then
# each round's ratio of the largest count to the smallest, for (a)
# at-least-once and (b) exactly-once with identity keys.
#
#   bench/scaling.sh                       # 1,000,000 records, 3 rounds, 4 8 16 shards
#   RECORDS=2000000 ROUNDS=5 SHARDS="4 16" bench/scaling.sh
#   PROFILES=1 bench/scaling.sh            # plus CPU and mutex profiles of each run
#   SCENARIOS=atLeastOnce,exactlyOnce,exactlyOncePayloadKeys bench/scaling.sh
#
# It writes each run's JSON (and profiles) under OUT (default: a new
# temporary directory) and prints a summary; it needs Go and nothing else.
# It runs only (a) and (b) unless SCENARIOS (idem bench --scenarios) says
# otherwise: on 16 cores, some 10 to 20 seconds a run at the default size.
set -euo pipefail

records=${RECORDS:-1000000}
rounds=${ROUNDS:-3}
shards=${SHARDS:-"4 8 16"}
scenarios=${SCENARIOS:-atLeastOnce,exactlyOnce}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
cd "$(dirname "$0")/.."

go build -o "$out/idem" ./cmd/idem
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')" | tee "$out/summary.txt"
echo "records: $records   rounds: $rounds   shards: $shards   scenarios: $scenarios   output: $out" | tee -a "$out/summary.txt"

# rps prints the recordsPerSec of scenario $2 in idem bench's JSON file $1.
rps() {
	awk -v key="\"$2\": {" 'index($0, key) { inside = 1 } inside && /"recordsPerSec"/ { gsub(/[^0-9]/, ""); print; exit }' "$1"
}

for r in $(seq "$rounds"); do
	for s in $shards; do
		prof=()
		if [[ -n ${PROFILES:-} ]]; then
			prof=(--cpuprofile "$out/cpu-r$r-s$s.prof" --mutexprofile "$out/mutex-r$r-s$s.prof")
		fi
		"$out/idem" bench --records "$records" --shards "$s" --scenarios "$scenarios" --json "${prof[@]}" >"$out/r$r-s$s.json" 2>/dev/null
		echo "round $r, $s shards: (a) $(rps "$out/r$r-s$s.json" atLeastOnce) (b) $(rps "$out/r$r-s$s.json" exactlyOnce) records/s" | tee -a "$out/summary.txt"
	done
done

first=${shards%% *}
last=${shards##* }
for r in $(seq "$rounds"); do
	a1=$(rps "$out/r$r-s$first.json" atLeastOnce) a2=$(rps "$out/r$r-s$last.json" atLeastOnce)
	b1=$(rps "$out/r$r-s$first.json" exactlyOnce) b2=$(rps "$out/r$r-s$last.json" exactlyOnce)
	awk -v r="$r" -v f="$first" -v l="$last" -v a1="$a1" -v a2="$a2" -v b1="$b1" -v b2="$b2" \
		'BEGIN { printf "round %s: %s shards / %s shards: (a) %.2f (b) %.2f\n", r, l, f, a2 / a1, b2 / b1 }' | tee -a "$out/summary.txt"
done
