#!/bin/bash
# SPDX-License-Identifier: GPL-2.0 (drives netns-userspace.sh, derived from the kernel's netns.sh)
# Driver: run the adapted kernel selftest against userspace WireGuard daemons.
#   scripts/kernel-selftest/run.sh [-n RUNS] [IMPL ...]     (as root; ~3 min per daemon)
# IMPL: meshnode (default set: all three), wggo-debian, wggo-modern, or NAME=/path/to/daemon
# Runs are sequential (each run makes its own namespaces wgu-PID-{0,1,2}).
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=/tmp/meshnode-selftest/runs
REPO=$(cd "$HERE/../.." && pwd)
runs=1
if [[ $1 == -n ]]; then runs=$2; shift 2; fi
(( $# )) || set -- meshnode wggo-debian wggo-modern
declare -A BIN=(
	[meshnode]=$REPO/.venv/bin/meshnode-wg
	[wggo-debian]=/usr/bin/wireguard-go
	[wggo-modern]=$REPO/../shared/tools/wireguard-go-modern/wireguard-go
)
stamp=$(date +%Y%m%d-%H%M%S)
SUM=$RUNS/summary-$stamp.txt
mkdir -p "$RUNS"
for ((r = 1; r <= runs; r++)); do
	for impl in "$@"; do
		if [[ $impl == *=* ]]; then bin=${impl#*=}; impl=${impl%%=*}; else bin=${BIN[$impl]}; fi
		[[ -x $bin ]] || { echo "no daemon for $impl ($bin)"; continue; }
		out=$RUNS/$impl-$stamp-run$r
		echo "=== $impl run $r -> $out" | tee -a "$SUM"
		start=$SECONDS
		WG_DAEMON=$bin LABEL=$impl OUT=$out "$HERE/netns-userspace.sh" >/dev/null 2>&1
		{
			grep '^SUMMARY' "$out/results.txt"
			echo "  ($((SECONDS - start)) s)"
			grep -E '^(FAIL|SETUP-ERR|DAEMON-DIED|NOTE)' "$out/results.txt" | sed 's/^/  /'
		} | tee -a "$SUM"
	done
done
echo "summary: $SUM"
