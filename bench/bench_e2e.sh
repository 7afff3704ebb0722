#!/usr/bin/env bash
# End-to-end throughput: host A -> TUN -> appliance A -> veth -> appliance B -> TUN -> host B, beside
# wireguard-go on the same veth set-up and the raw veth, in one run. Needs root, iperf3, wireguard-go,
# wireguard-tools, jq, bc.  Usage (from the repository root):
#   RUNS=3 DUR=3 bash bench/bench_e2e.sh     (results and logs in $OUT, default a temp dir)
# RUNS: whole measurements (appliances, then wireguard-go, then the veth) one after the other; the summary
# gives the median of each figure and of the per-run ratios.
# Loss-free rate: the highest offered UDP rate (iperf3 -b) with loss under 0.5%: from the unpaced (-b 0)
# delivery rate down in steps of 10% to the first rate that passes, then two halvings of the gap to the
# last rate that failed (resolution 2.5%). The same search for both tunnels.
# CPU: the tunnel processes' user+system time, % of one core, and microseconds per delivered packet.
# TXQLEN: the TUN txqueuelen of both tunnels (default 1000, the appliance's tun.txqueuelen default;
# 0 = the kernel's 500). WG_TXQLEN: wireguard-go's alone (default: TXQLEN, so both queue alike).
# UDP_SEGS: UDP datagrams per coalesced TUN write on the receiving appliance (default 64).
# PROFILE=1: a perf profile of both appliances under 40k packets/s of 1392 B UDP ($OUT/profile-[AB].txt).
# RSS_SECONDS=60: the appliances' resident size over a full-rate run.
# APP_ARGS: more arguments for bench/e2e_appliance.py (e.g. "--no-threads").
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-3}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
TCK=$(getconf CLK_TCK)
RUNS=${RUNS:-1}
TXQLEN=${TXQLEN:-1000}
WG_TXQLEN=${WG_TXQLEN:-$TXQLEN}
TXQ=(--txqueuelen "$TXQLEN")
if [ -n "${UDP_SEGS:-}" ]; then TXQ+=(--udp-write-segs "$UDP_SEGS"); fi
read -r -a EXTRA <<< "${APP_ARGS:-}"
NS=(e2eAppA e2eAppB e2eHostA e2eHostB)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT

underlay() {  # veth 198.51.100.1/30 (A) <-> 198.51.100.2/30 (B) between $1 and $2
  ip link add vA netns "$1" type veth peer name vB netns "$2"
  ip -n "$1" addr add 198.51.100.1/30 dev vA; ip -n "$2" addr add 198.51.100.2/30 dev vB
  ip -n "$1" link set vA up; ip -n "$2" link set vB up
  for n in "$@"; do ip -n "$n" link set lo up; done
}

warmup() {  # handshakes done before the first timed trial (a short low-rate flow; no ping binary needed)
  ip netns exec e2eHostA iperf3 -c 203.0.113.1 -t 1 -u -b 1M -l 200 -J 2>/dev/null \
    | jq -r '"warm-up: \(.end.sum.packets // 0) sent, \(.end.sum.lost_percent // 100)% lost"' || true
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# trial NAME CLIENT_NS DST PIDA PIDB [iperf3 args]: prints "Gbit/s pps loss% cpuA% cpuB%"
trial() {
  local name=$1 ns=$2 dst=$3 pa=$4 pb=$5; shift 5
  local j="$OUT/$name.json" a0 b0 a1 b1 t0 t1
  a0=$(cpu_ticks "$pa"); b0=$(cpu_ticks "$pb"); t0=$(date +%s.%N)
  ip netns exec "$ns" iperf3 -c "$dst" -t "$DUR" -J "$@" > "$j" 2>/dev/null || true
  a1=$(cpu_ticks "$pa"); b1=$(cpu_ticks "$pb"); t1=$(date +%s.%N)
  local ca cb
  ca=$(echo "($a1-$a0)/$TCK/($t1-$t0)*100" | bc -l); cb=$(echo "($b1-$b0)/$TCK/($t1-$t0)*100" | bc -l)
  if jq -e '.start.test_start.protocol=="UDP"' "$j" >/dev/null 2>&1; then
    jq -r --arg ca "$ca" --arg cb "$cb" '.start.test_start.blksize as $L | .end.sum as $s |
      (($s.packets - $s.lost_packets) / $s.seconds) as $pps |
      "\($pps*$L*8/1e9) \($pps) \($s.lost_percent) \($ca) \($cb)"' "$j"
  elif jq -e '.end.sum_received' "$j" >/dev/null 2>&1; then
    jq -r --arg ca "$ca" --arg cb "$cb" '"\(.end.sum_received.bits_per_second/1e9) 0 0 \($ca) \($cb)"' "$j"
  else
    echo "0 0 100 $ca $cb"
  fi
}

passes() { echo "$1" | awk '{print ($3 < 0.5 && $2 > 0) ? 1 : 0}'; }

# measure SYS CLIENT_NS DST PIDA PIDB: TCP, then the loss-free UDP rate at 1392 B and 64 B
measure() {
  local sys=$1 ns=$2 dst=$3 pa=$4 pb=$5 r
  r=$(trial "${sys}_tcp" "$ns" "$dst" "$pa" "$pb"); echo "$sys tcp - $r" | tee -a "$RES"
  for L in 1392 64; do
    local rate best="" bestrate=0 failrate res k=0
    res=$(trial "${sys}_udp${L}_max" "$ns" "$dst" "$pa" "$pb" -u -b 0 -l "$L")
    echo "$sys udp$L unpaced $res" | tee -a "$RES"
    rate=$(echo "$res" | awk '{printf "%.0f", $1*1e9}')
    failrate=$(awk -v r="$rate" 'BEGIN{printf "%.0f", r*1.1}')
    for step in 1 2 3 4 5 6 7 8; do  # down in 10% steps to the first rate that passes
      res=$(trial "${sys}_udp${L}_$((k++))" "$ns" "$dst" "$pa" "$pb" -u -b "$rate" -l "$L")
      echo "$sys udp$L offered=$rate $res" | tee -a "$RES"
      if [ "$(passes "$res")" = 1 ]; then best=$res; bestrate=$rate; break; fi
      failrate=$rate; rate=$(awk -v r="$rate" 'BEGIN{printf "%.0f", r*0.9}')
    done
    if [ -n "$best" ]; then
      for half in 1 2; do  # two halvings of the gap between the passing and the failing rate
        rate=$(awk -v a="$bestrate" -v b="$failrate" 'BEGIN{printf "%.0f", (a+b)/2}')
        res=$(trial "${sys}_udp${L}_$((k++))" "$ns" "$dst" "$pa" "$pb" -u -b "$rate" -l "$L")
        echo "$sys udp$L offered=$rate $res" | tee -a "$RES"
        if [ "$(passes "$res")" = 1 ]; then best=$res; bestrate=$rate; else failrate=$rate; fi
      done
    fi
    echo "$sys udp$L lossfree ${best:-0 0 100 0 0}" | tee -a "$RES"
  done
}

diag() {  # where packets were lost: the TUN queues (TX dropped) and the receiving host's UDP errors
  { echo "-- $1: TUN in host A"; ip -n e2eHostA -s link show "$2"
    echo "-- $1: host B UDP"; ip netns exec e2eHostB nstat -az Udp* 2>/dev/null | awk '$2 > 0'
    echo "-- $1: appliance/endpoint B UDP"; ip netns exec e2eAppB nstat -az Udp* 2>/dev/null | awk '$2 > 0'
  } >> "$OUT/diag.txt" 2>&1 || true
}

run_scion() {
  echo "== scion-appliance (two appliance processes, TUN in host namespaces) =="
  for n in "${NS[@]}"; do ip netns add "$n"; done
  underlay e2eAppA e2eAppB
  ip netns exec e2eAppA "$PY" bench/e2e_appliance.py --me a --peer b --tun-ns e2eHostA --local 198.51.100.1 \
    --remote 198.51.100.2 --tun-addr 192.0.2.1/24 --remote-net 203.0.113.0/24 "${TXQ[@]}" "${EXTRA[@]}" \
    > "$OUT/appA.log" 2>&1 &
  PA=$!; PIDS+=("$PA")
  ip netns exec e2eAppB "$PY" bench/e2e_appliance.py --me b --peer a --tun-ns e2eHostB --local 198.51.100.2 \
    --remote 198.51.100.1 --tun-addr 203.0.113.1/24 --remote-net 192.0.2.0/24 "${TXQ[@]}" "${EXTRA[@]}" \
    > "$OUT/appB.log" 2>&1 &
  PB=$!; PIDS+=("$PB")
  for _ in $(seq 100); do grep -q ready "$OUT/appA.log" && grep -q ready "$OUT/appB.log" && break; sleep 0.1; done
  ip netns exec e2eHostB iperf3 -s > "$OUT/iperf3-scion.log" 2>&1 & PIDS+=($!)
  sleep 0.5
  warmup
  measure scion e2eHostA 203.0.113.1 "$PA" "$PB"
  if [ -n "${PROFILE:-}" ]; then  # perf profile of both appliances (all threads) under 1392 B UDP at 40k/s
    ( ip netns exec e2eHostA iperf3 -c 203.0.113.1 -t 8 -u -b 450M -l 1392 >/dev/null 2>&1 & )
    sleep 1
    local perfs=()
    for side in A B; do
      local pid=$PA; [ "$side" = B ] && pid=$PB
      perf record -F 999 -p "$pid" -o "$OUT/perf-$side.data" -- sleep 5 >/dev/null 2>&1 & perfs+=($!)
    done
    wait "${perfs[@]}" || true
    for side in A B; do
      { echo "== appliance $side: share of on-CPU samples by shared object, then by symbol"
        perf report -i "$OUT/perf-$side.data" --sort dso 2>/dev/null | grep -E '^ +[0-9]' | head -8 || true
        perf report -i "$OUT/perf-$side.data" --sort sym 2>/dev/null | grep -E '^ +[0-9]' | head -25 || true
      } > "$OUT/profile-$side.txt"
    done
    sleep 3
  fi
  if [ -n "${RSS_SECONDS:-}" ]; then  # resident size of both appliances over a full-rate run
    ( ip netns exec e2eHostA iperf3 -c 203.0.113.1 -t "$RSS_SECONDS" -u -b 0 -l 1392 >/dev/null 2>&1 & )
    for s in $(seq 0 10 "$RSS_SECONDS"); do
      echo "rss t=${s}s A=$(awk '/VmRSS/{print $2}' /proc/$PA/status)kB B=$(awk '/VmRSS/{print $2}' /proc/$PB/status)kB" \
        | tee -a "$RES"; sleep 10
    done
  fi
  diag scion sig0
  cleanup
}

run_wg() {
  echo "== wireguard-go (same veth set-up) and the raw veth =="
  for n in "${NS[@]}"; do ip netns add "$n"; done
  underlay e2eAppA e2eAppB
  ( umask 077; wg genkey > "$OUT/a.key"; wg pubkey < "$OUT/a.key" > "$OUT/a.pub"
    wg genkey > "$OUT/b.key"; wg pubkey < "$OUT/b.key" > "$OUT/b.pub" )
  ip netns exec e2eAppA env WG_PROCESS_FOREGROUND=1 wireguard-go -f e2ewga > "$OUT/wgA.log" 2>&1 & WA=$!; PIDS+=("$WA")
  ip netns exec e2eAppB env WG_PROCESS_FOREGROUND=1 wireguard-go -f e2ewgb > "$OUT/wgB.log" 2>&1 & WB=$!; PIDS+=("$WB")
  for _ in $(seq 50); do [ -S /var/run/wireguard/e2ewga.sock ] && [ -S /var/run/wireguard/e2ewgb.sock ] && break; sleep 0.1; done
  ip netns exec e2eAppA wg set e2ewga private-key "$OUT/a.key" listen-port 51820 \
    peer "$(cat "$OUT/b.pub")" endpoint 198.51.100.2:51820 allowed-ips 203.0.113.0/24
  ip netns exec e2eAppB wg set e2ewgb private-key "$OUT/b.key" listen-port 51820 \
    peer "$(cat "$OUT/a.pub")" endpoint 198.51.100.1:51820 allowed-ips 192.0.2.0/24
  # The TUN devices into the host namespaces, as the appliances' are.
  ip -n e2eAppA link set e2ewga netns e2eHostA; ip -n e2eAppB link set e2ewgb netns e2eHostB
  ip -n e2eHostA addr add 192.0.2.1/24 dev e2ewga; ip -n e2eHostA link set e2ewga mtu 1420 up
  ip -n e2eHostB addr add 203.0.113.1/24 dev e2ewgb; ip -n e2eHostB link set e2ewgb mtu 1420 up
  ip -n e2eHostA route add 203.0.113.0/24 dev e2ewga 2>/dev/null || true
  ip -n e2eHostB route add 192.0.2.0/24 dev e2ewgb 2>/dev/null || true
  local q=$WG_TXQLEN; [ "$q" = 0 ] && q=500
  ip -n e2eHostA link set e2ewga txqueuelen "$q"; ip -n e2eHostB link set e2ewgb txqueuelen "$q"
  ip netns exec e2eHostB iperf3 -s > "$OUT/iperf3-wg.log" 2>&1 & PIDS+=($!)
  ip netns exec e2eAppB iperf3 -s > "$OUT/iperf3-veth.log" 2>&1 & PIDS+=($!)
  sleep 0.5
  warmup
  measure wg e2eHostA 203.0.113.1 "$WA" "$WB"
  diag wg e2ewga
  r=$(trial veth_tcp e2eAppA 198.51.100.2 "$WA" "$WB"); echo "veth tcp - $r" | tee -a "$RES"
  for L in 1392 64; do
    r=$(trial "veth_udp$L" e2eAppA 198.51.100.2 "$WA" "$WB" -u -b 0 -l "$L"); echo "veth udp$L unpaced $r" | tee -a "$RES"
  done
  cleanup
}

for run in $(seq "$RUNS"); do
  RES="$OUT/results-$run.txt"; : > "$RES"
  echo "#### run $run of $RUNS (TUN txqueuelen: appliance $TXQLEN, wireguard-go $WG_TXQLEN)"
  run_scion
  run_wg
done
"$PY" bench/e2e_summary.py "$OUT"/results-*.txt
echo "results: $OUT"
