#!/usr/bin/env bash
# The engine at SigmaHQ scale: load time, peak memory and throughput of the
# real `rsigma` binary with the whole SigmaHQ `rules/` corpus, on the
# deterministic Windows stream and the mixed Linux/cloud/proxy stream.
# docs/performance.md records its output and explains each figure.
#
#   bash tests/bench/sigmahq-scale.sh            # everything (~10 minutes)
#   EVENTS=50000 bash tests/bench/sigmahq-scale.sh
#
# Environment:
#   RSIGMA_SIGMAHQ_DIR  SigmaHQ checkout (default ../shared/corpus/sigmahq)
#   EVENTS              events per stream (default 200000)
#   ROUNDS              runs per throughput figure, the median is reported (default 3)
#                       (throughput is steady state: see throughput() below)
#   SECTIONS            which parts to run (default "scale load eval strategies daemon")
#
# Every process is pinned to one core (taskset -c 0) except the HTTP
# client in the daemon section. Nothing leaves loopback.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CORPUS=${RSIGMA_SIGMAHQ_DIR:-$ROOT/../shared/corpus/sigmahq}
EVENTS=${EVENTS:-200000}
ROUNDS=${ROUNDS:-3}
SECTIONS=${SECTIONS:-scale load eval strategies daemon}
RULES=$CORPUS/rules
FIELD_MAP=product=source.product,service=source.service,category=source.category

[[ -d $RULES ]] || { echo "no SigmaHQ rules at $RULES (set RSIGMA_SIGMAHQ_DIR)" >&2; exit 2; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 2; }

cd "$ROOT"
cargo build --release -q -p rsigma-cli
cargo build --release -q -p rsigma-engine --example generate_events
BIN=$ROOT/target/release/rsigma
GEN=$ROOT/target/release/examples/generate_events
WORK=$(mktemp -d)
trap 'kill "${DAEMON_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

WARM=$((EVENTS / 10))
for stream in windows mixed; do
    "$GEN" "$stream" "$EVENTS" >"$WORK/$stream.ndjson"
    head -n "$WARM" "$WORK/$stream.ndjson" >"$WORK/$stream-warm.ndjson"
done
: >"$WORK/empty.ndjson"
mkdir "$WORK/no-rules"

ONE_CORE=(taskset -c 0)

# Runs a command under /usr/bin/time; prints "wall_s user_s peak_rss_kib".
measure() {
    local out=$WORK/time.$$
    /usr/bin/time -f "%e %U %M" -o "$out" "$@" >/dev/null 2>"$WORK/stderr" || {
        echo "failed: $*" >&2
        cat "$WORK/stderr" >&2
        exit 1
    }
    cat "$out"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Steady-state events/s of `eval` over a stream (CPU seconds): the run over
# the whole stream minus the run over its first WARM events, which pays the
# load and the one-off build of each logsource route's index; median of ROUNDS.
throughput() {
    local rules=$1 stream=$2
    shift 2
    local base full rates=()
    for _ in $(seq "$ROUNDS"); do
        base=$(measure "${ONE_CORE[@]}" "$BIN" engine eval -r "$rules" "$@" -e "@$WORK/$stream-warm.ndjson" | cut -d' ' -f2)
        full=$(measure "${ONE_CORE[@]}" "$BIN" engine eval -r "$rules" "$@" -e "@$WORK/$stream.ndjson" | cut -d' ' -f2)
        rates+=("$(awk -v n="$((EVENTS - WARM))" -v a="$full" -v b="$base" 'BEGIN { printf "%.0f", n / (a - b) }')")
    done
    printf '%s\n' "${rates[@]}" | median
}

section() { [[ " $SECTIONS " == *" $1 "* ]]; }

echo "rsigma at SigmaHQ scale: $(find "$RULES" -name '*.yml' | wc -l) rule files, $EVENTS events per stream, median of $ROUNDS"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

if section scale; then
    echo
    echo "## Load + compile by rule count (eval -e @empty, one core): rules, wall s, user s, peak RSS MiB"
    mapfile -t files < <(find "$RULES" -name '*.yml' | sort)
    for n in 100 300 1000 3000; do
        dir=$WORK/rules-$n
        mkdir -p "$dir"
        # Every k-th file: a spread over all products, not one directory.
        step=$(( ${#files[@]} / n ))
        for ((i = 0; i < n; i++)); do cp "${files[i * step]}" "$dir/$i.yml"; done
        read -r wall user rss < <(measure "${ONE_CORE[@]}" "$BIN" engine eval -r "$dir" -e "@$WORK/empty.ndjson")
        echo "$n $wall $user $((rss / 1024))"
    done
fi

if section load; then
    echo
    echo "## Whole rules/ corpus (one core): what, wall s, user s, peak RSS MiB"
    read -r wall user rss < <(measure "${ONE_CORE[@]}" "$BIN" engine eval -r "$RULES" -e "@$WORK/empty.ndjson")
    echo "load+compile $wall $user $((rss / 1024))"
    read -r wall user rss < <(measure "${ONE_CORE[@]}" "$BIN" rule validate "$RULES")
    echo "rule-validate $wall $user $((rss / 1024))"
    for stream in windows mixed; do
        read -r wall user rss < <(measure "${ONE_CORE[@]}" "$BIN" engine eval -r "$RULES" --logsource-field-map "$FIELD_MAP" -e "@$WORK/$stream.ndjson")
        echo "after-$stream-stream $wall $user $((rss / 1024))"
    done
fi

if section eval; then
    echo
    echo "## engine eval from NDJSON, parse included, one core: stream, routing, events/s"
    for stream in windows mixed; do
        echo "$stream parse-only-floor $(throughput "$WORK/no-rules" "$stream")"
        echo "$stream routing-on $(throughput "$RULES" "$stream" --logsource-field-map "$FIELD_MAP")"
        echo "$stream routing-off $(throughput "$RULES" "$stream" --no-logsource-routing)"
    done
fi

if section strategies; then
    echo
    echo "## Prefilter strategies, whole corpus, routing on, one core: strategy, load wall s, peak RSS MiB after the windows stream, windows events/s, mixed events/s"
    for strategy in default --cross-rule-ac --bloom-prefilter "--bloom-prefilter --cross-rule-ac"; do
        flags=()
        [[ $strategy == default ]] || read -r -a flags <<<"$strategy"
        read -r load _ _ < <(measure "${ONE_CORE[@]}" "$BIN" engine eval -r "$RULES" "${flags[@]}" -e "@$WORK/empty.ndjson")
        read -r _ _ rss < <(measure "${ONE_CORE[@]}" "$BIN" engine eval -r "$RULES" "${flags[@]}" -e "@$WORK/windows.ndjson")
        w=$(throughput "$RULES" windows "${flags[@]}")
        m=$(throughput "$RULES" mixed "${flags[@]}" --logsource-field-map "$FIELD_MAP")
        echo "$strategy $load $((rss / 1024)) $w $m"
    done
fi

daemon_cpu() { awk '{ print ($14 + $15) / 100 }' "/proc/$DAEMON_PID/stat"; }
daemon_rss() { awk -v k="$1" '$1 == k":" { print int($2 / 1024) }' "/proc/$DAEMON_PID/status"; }

if section daemon; then
    echo
    echo "## Daemon over HTTP, whole corpus: stream, events per daemon CPU second, steady RSS MiB, reload peak RSS MiB"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    for stream in windows mixed; do
        "$BIN" engine daemon -r "$RULES" --input http --api-addr "127.0.0.1:$port" \
            --logsource-field-map "$FIELD_MAP" --output "file://$WORK/detections.ndjson" \
            >/dev/null 2>"$WORK/daemon.log" &
        DAEMON_PID=$!
        until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
        split -l 5000 "$WORK/$stream.ndjson" "$WORK/chunk-"
        before=$(daemon_cpu)
        for chunk in "$WORK"/chunk-*; do
            curl -fs --data-binary "@$chunk" "http://127.0.0.1:$port/api/v1/events" >/dev/null
        done
        until [[ $(curl -fs "http://127.0.0.1:$port/api/v1/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["events_processed"])') -ge $EVENTS ]]; do
            sleep 0.2
        done
        after=$(daemon_cpu)
        steady=$(daemon_rss VmRSS)
        curl -fs -X POST "http://127.0.0.1:$port/api/v1/reload" >/dev/null
        until [[ $(curl -fs "http://127.0.0.1:$port/api/v1/status" | python3 -c 'import json, sys; r = json.load(sys.stdin)["last_reload"]; print(1 if r else 0)') == 1 ]]; do
            sleep 0.2
        done
        sleep 1
        peak=$(daemon_rss VmHWM)
        rate=$(awk -v n="$EVENTS" -v a="$after" -v b="$before" 'BEGIN { printf "%.0f", n / (a - b) }')
        echo "$stream $rate $steady $peak"
        kill "$DAEMON_PID"
        wait "$DAEMON_PID" 2>/dev/null || true
        DAEMON_PID=
        rm -f "$WORK"/chunk-*
    done
fi
