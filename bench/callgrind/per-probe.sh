#!/usr/bin/env bash
# Instructions the gateway executes per probe, counted by callgrind (repeatable whatever
# else the machine does): the difference between a run with MANY probes and one with FEW,
# divided by the difference, so start-up and shutdown cancel out. Both of its threads
# count. Against a real local qemu-ga, `GET /live` (guestAgentPing).
#
#   bench/callgrind/per-probe.sh BINARY [BINARY...]   one line per binary and mode
#
# Modes (probes.py): keepalive (one connection), apart (a new connection each, 50 ms
# apart: each its own burst, as kubelet's probes come).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
ensure_qemu_ga
command -v valgrind >/dev/null || apt_install valgrind
FEW=${FEW:-100}
MANY=${MANY:-1000}
config=$(mktemp)
printf 'livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n' >"$config"

# instructions BINARY MODE COUNT
instructions() {
  local bin=$1 mode=$2 count=$3 dir port=$((20000 + RANDOM % 20000))
  dir=$(mktemp -d)
  "$(qemu_ga_path)" -m unix-listen -p "$dir/qga.sock" -t "$dir" -f "$dir/qga.pid" &
  local qga=$!
  for _ in $(seq 100); do [ -S "$dir/qga.sock" ] && break; sleep 0.05; done
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve --config "$config" \
    --agent "unix://$dir/qga.sock" --listen "127.0.0.1:$port" 2>"$dir/gateway.log" &
  local gateway=$!
  python3 bench/callgrind/probes.py "$port" wait 0
  python3 bench/callgrind/probes.py "$port" apart 20
  python3 bench/callgrind/probes.py "$port" "$mode" "$count"
  kill -TERM "$gateway"; wait "$gateway" || true
  kill "$qga"; wait "$qga" 2>/dev/null || true
  grep -E '^(summary|totals):' "$dir/cg.out" | head -n1 | awk '{print $2}'
  rm -rf "$dir"
}

for bin in "$@"; do
  for mode in keepalive apart; do
    few=$(instructions "$bin" "$mode" "$FEW")
    many=$(instructions "$bin" "$mode" "$MANY")
    echo "$bin $mode $(( (many - few) / (MANY - FEW) )) instructions per probe"
  done
done
rm -f "$config"
