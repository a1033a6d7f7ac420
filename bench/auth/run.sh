#!/usr/bin/env bash
# What authorization costs: the same `eddy bench produce` / `consume` as a
# non-superuser (rules: all on topics and groups prefixed "bench"), against two
# release brokers side by side on 127.0.0.1: one checking every request, one
# started with the hidden --bench-skip-authorization (authentication stays on).
# Runs alternate A, B, A, B... so both see the same machine noise.
#   bench/auth/run.sh [ROUNDS] [RECORDS]
set -euo pipefail
ROUNDS=${1:-3}
RECORDS=${2:-300000}
EDDY=${EDDY:-target/release/eddy}
WORK=$(mktemp -d /tmp/eddy-auth-bench.XXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$WORK"' EXIT
start() { # name port extra
  "$EDDY" broker --data-dir "$WORK/$1" --listen "127.0.0.1:$2" --no-runtime ${3:-} > "$WORK/$1.log" 2>&1 &
  for _ in $(seq 200); do [ -s "$WORK/$1/broker.addr" ] && [ -s "$WORK/$1/admin.password" ] && return; sleep 0.05; done
  echo "broker $1 did not start"; cat "$WORK/$1.log"; exit 1
}
start checked 9611
start skipped 9612 --bench-skip-authorization
echo "bench-password" > "$WORK/bench.pw"
for b in checked:9611 skipped:9612; do
  dir=${b%%:*}; port=${b##*:}
  adm=(--broker 127.0.0.1:$port --ca "$WORK/$dir/tls/ca.pem")
  "$EDDY" user create bench --new-password-file "$WORK/bench.pw" "${adm[@]}" > /dev/null
  "$EDDY" acl add --principal bench --allow all --topic bench --prefix "${adm[@]}" > /dev/null
  "$EDDY" acl add --principal bench --allow all --group bench --prefix "${adm[@]}" > /dev/null
done
run() { # dir port what round
  local args=(--broker "127.0.0.1:$2" --ca "$WORK/$1/tls/ca.pem" --user bench --json)
  if [ "$3" = produce ]; then
    EDDY_PASSWORD=bench-password "$EDDY" bench produce --topic "bench-$4" --records "$RECORDS" "${args[@]}"
  else
    EDDY_PASSWORD=bench-password "$EDDY" bench consume --topic "bench-$4" "${args[@]}"
  fi | python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['mb_per_sec'])"
}
printf "round\twhat\tchecked MB/s\tskipped MB/s\tratio\n"
for r in $(seq "$ROUNDS"); do
  for what in produce consume; do
    a=$(run checked 9611 $what $r); b=$(run skipped 9612 $what $r)
    printf "%s\t%s\t%s\t%s\t%s\n" "$r" "$what" "$a" "$b" "$(python3 -c "print(f'{$a/$b:.3f}')")"
  done
done
