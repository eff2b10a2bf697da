#!/usr/bin/env bash
# The capacity suite of SPEC §7 on this machine, one command:
#
#   perf/run.sh            # everything, ~4 minutes on 2 cores
#   perf/run.sh p4 p5      # some of: baseline p2 p2max p3 p4 p5 p6 queue cpu
#
# Builds release binaries, starts Mosquitto (TCP_NODELAY, on a free port) and, for each
# scenario, a fresh gateway publishing to it with its own histograms in the scenario's
# result folder; then renders perf/dashboard.html from every folder this run wrote.
# Results land in perf/results/<scenario>-<UTC>/ (loadgen's .hlog + summary.json, the
# gateway's shard-*.hlog). Knobs (environment): DEVICES (P4, default 1000000),
# STORM_RATE (P3, 50000), NOTIFY_RATE (P2 latency, 100000), NOTIFY_MAX_RATE (P2
# capacity: offered beyond what the box carries, 200000), NOTIFY_DEVICES (10000),
# COMMAND_RATE (P5, 10000), HANDSHAKE_RATE (P6 full PSK handshakes, 5000; on a gateway
# of one shard, since P6 is per core), BASELINE_RATE (offered beyond the box's UDP limit, 400000),
# DURATION (each timed phase, 20s), SHARDS (gateway shards, 2), PERSIST (1: the gateway
# journals registrations into a fresh directory per scenario, as by default; 0: off),
# RX_MODERATION (the gateway's `rx_moderation`, 4ms as by default), NOTIFY_SAMPLE (p2max:
# the application watches every Nth device's notifications, 16), ECHO_SINK (cpu: the echo
# sink, `blocking` or `glommio`, the shard's receive path on an executor without the gateway).
# `queue` (not in the default set): 2,000 devices, half of them sleeping (queue mode,
# awake QUEUE_AWAKE of every QUEUE_WAKE, the gateway's window QUEUE_WINDOW), notifying and
# read 200 times a second for 60 s. `cpu` (not in the default set): the gateway's CPU per
# notification beside the echo sink's CPU per datagram at each of CPU_RATES, CPU_ROUNDS
# (2) interleaved rounds of 5 s each.
#
# P2 compares capacities: `baseline` and `p2max` both offer more than the box carries, so
# what arrives per second is each path's limit on this machine in this run. P2 is ingest
# to the broker: in `p2max` the MQTT application watches every NOTIFY_SAMPLE-th device's
# notifications (default 16) and scales, so the broker's fan-out to a subscriber on the
# same two cores does not set the limit (NOTIFY_SAMPLE=1 watches all).
#
# BROKER: `mosquitto` (the default: Mosquitto on a free port, TCP_NODELAY) or `embedded`
# (each scenario's gateway runs its own embedded broker on that port, as by default, and
# the gateway's CPU then includes the broker's). With `embedded`, NOTIFY_SAMPLE defaults
# to 1: rumqttd matches a publish to a topic no filter takes against every filter again
# (it caches only non-empty matches), so the 625 exact-topic subscriptions of a sample
# would cost it more than forwarding everything to one wildcard subscription.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000000}
STORM_RATE=${STORM_RATE:-50000}
NOTIFY_RATE=${NOTIFY_RATE:-100000}
NOTIFY_MAX_RATE=${NOTIFY_MAX_RATE:-200000}
NOTIFY_DEVICES=${NOTIFY_DEVICES:-10000}
COMMAND_RATE=${COMMAND_RATE:-10000}
BASELINE_RATE=${BASELINE_RATE:-400000}
DURATION=${DURATION:-20s}
SHARDS=${SHARDS:-2}
PERSIST=${PERSIST:-1}
STEPS=("$@")
HANDSHAKE_RATE=${HANDSHAKE_RATE:-5000}
QMODE_WINDOW=22s
QUEUE_WINDOW=${QUEUE_WINDOW:-5s}
QUEUE_AWAKE=${QUEUE_AWAKE:-6s}
QUEUE_WAKE=${QUEUE_WAKE:-20s}
CPU_RATES=${CPU_RATES:-5000 20000}
RX_MODERATION=${RX_MODERATION:-4ms}
BROKER=${BROKER:-mosquitto}
case $BROKER in
    mosquitto) NOTIFY_SAMPLE=${NOTIFY_SAMPLE:-16} ;;
    embedded) NOTIFY_SAMPLE=${NOTIFY_SAMPLE:-1} ;;
    *)
        echo "BROKER must be mosquitto or embedded, not $BROKER" >&2
        exit 2
        ;;
esac
ECHO_SINK=${ECHO_SINK:-blocking}
[ ${#STEPS[@]} -gt 0 ] || STEPS=(baseline p3 p4 p2 p2max p5 p6)

log() { printf '\n== %s\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stamp() { date -u +%Y%m%dT%H%M%SZ; }

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ "$BROKER" = mosquitto ] && [ ! -x "$MOSQUITTO" ]; then
    echo "perf/run.sh needs Mosquitto: apt-get install -y mosquitto" >&2
    exit 2
fi

log "building"
cargo build --release -q -p lwm2m-gateway -p loadgen
GW=./target/release/lwm2m-gateway
LG=./target/release/loadgen

WORK=$(mktemp -d)
MQTT_PORT=$(free_port)
COAP_PORT=$(free_port)
DTLS_PORT=$(free_port)
PSK_FILE=$WORK/psk.txt
"$LG" psk-file --devices 40000 --prefix p6 --out "$PSK_FILE" >/dev/null
MOSQ_PID=""
GW_PID=""
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null || true
    [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$BROKER" = mosquitto ]; then
    cat >"$WORK/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
set_tcp_nodelay true
CONF
    "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    MOSQ_PID=$!
    BROKER_LINE="s|^broker = \"embedded\"|broker = \"mqtt://127.0.0.1:$MQTT_PORT\"|"
else
    BROKER_LINE="s|^embedded_bind = .*|embedded_bind = \"127.0.0.1:$MQTT_PORT\"|"
fi
RESULT_SUFFIX=""
[ "$BROKER" = mosquitto ] || RESULT_SUFFIX="-$BROKER"

# A gateway for one scenario: default configuration, BROKER as the broker, histograms
# (1 s intervals) into the scenario's folder.
start_gateway() {
    local dir=$1
    mkdir -p "$dir"
    local journal=""
    if [ "$PERSIST" = 1 ]; then
        journal="$WORK/journal-$(basename "$dir")"
    fi
    sed -e "s|^dir = \"data\"|dir = \"$journal\"|" \
        -e "s|^shards = .*|shards = $SHARDS|" \
        -e "s|^qmode_time_window = .*|qmode_time_window = \"$QMODE_WINDOW\"|" \
        -e "s|^bind = \"0.0.0.0:5683\"|bind = \"127.0.0.1:$COAP_PORT\"|" \
        -e "$BROKER_LINE" \
        -e "s|^histogram_dir = \"\"|histogram_dir = \"$dir\"|" \
        -e "s|^histogram_interval = .*|histogram_interval = \"1s\"|" \
        -e "s|^enabled = false|enabled = $DTLS|" \
        -e "s|^bind = \"0.0.0.0:5684\"|bind = \"127.0.0.1:$DTLS_PORT\"|" \
        -e "s|^psk_file = \"\"|psk_file = \"$PSK_FILE\"|" \
        -e "s|^bind = \"127.0.0.1:8080\"|bind = \"\"|" \
        -e "s|^rx_moderation = \"[^\"]*\"|rx_moderation = \"$RX_MODERATION\"|" \
        config/gateway.toml >"$WORK/gateway.toml"
    "$GW" --config "$WORK/gateway.toml" >"$dir/gateway.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 100); do
        grep -q "gateway running" "$dir/gateway.log" && return 0
        sleep 0.1
    done
    echo "the gateway did not start; see $dir/gateway.log" >&2
    exit 1
}

stop_gateway() {
    kill "$GW_PID"
    wait "$GW_PID" || true
    GW_PID=""
}

DTLS=false
DIRS=()
run() {
    local name=$1
    shift
    local dir=perf/results/$name$RESULT_SUFFIX-$(stamp)
    log "$name ($BROKER): $*"
    start_gateway "$dir"
    local status=0
    "$LG" "$@" --gateway "127.0.0.1:$COAP_PORT" --gateway-pid "$GW_PID" --out "$dir" || status=$?
    stop_gateway
    DIRS+=("$dir")
    return $status
}

FAILED=0
for step in "${STEPS[@]}"; do
    case $step in
    baseline)
        dir=perf/results/udp-baseline-$(stamp)
        log "udp-baseline at $BASELINE_RATE/s"
        # Saturating on purpose: lost echoes are expected and not a failure of the suite.
        "$LG" udp-baseline --rate "$BASELINE_RATE" --duration 10s --out "$dir" || true
        DIRS+=("$dir")
        ;;
    p3)
        run register-storm register-storm --devices 100000 --rate "$STORM_RATE" \
            --sockets 2 --prefix p3 --deregister || FAILED=1
        ;;
    p4)
        run register-1m register-storm --devices "$DEVICES" --rate 25000 --sockets 2 \
            --lifetime 3600 --timeout 300s --prefix p4 || FAILED=1
        ;;
    p2)
        run steady-notify steady-notify --devices "$NOTIFY_DEVICES" --notify-rate "$NOTIFY_RATE" \
            --con-ratio 0.1 --format tlv --duration "$DURATION" --sockets 2 \
            --mqtt "127.0.0.1:$MQTT_PORT" --prefix p2 || FAILED=1
        ;;
    p2max)
        run steady-notify-max steady-notify --devices "$NOTIFY_DEVICES" \
            --notify-rate "$NOTIFY_MAX_RATE" --con-ratio 0.1 --format tlv --duration 10s \
            --sockets 2 --sample "$NOTIFY_SAMPLE" --mqtt "127.0.0.1:$MQTT_PORT" \
            --prefix p2max || true
        ;;
    p5)
        run command-rtt command-rtt --devices 10000 --command-rate "$COMMAND_RATE" \
            --duration "$DURATION" --mqtt "127.0.0.1:$MQTT_PORT" --prefix p5 || FAILED=1
        ;;
    p6)
        # Full PSK handshakes through the cookie exchange, then resumptions from new ports.
        DTLS=true
        SHARDS_SAVED=$SHARDS
        SHARDS=1
        dir=perf/results/dtls-handshake-$(stamp)
        log "dtls-handshake at $HANDSHAKE_RATE/s, 1 shard"
        start_gateway "$dir"
        "$LG" dtls-handshake --gateway "127.0.0.1:$DTLS_PORT" --devices 20000 \
            --rate "$HANDSHAKE_RATE" --prefix p6 --resume --gateway-pid "$GW_PID" \
            --out "$dir" || FAILED=1
        stop_gateway
        DIRS+=("$dir")
        SHARDS=$SHARDS_SAVED
        DTLS=false
        ;;
    queue)
        # Commands to sleeping devices: queued, then answered when the device wakes.
        QMODE_WINDOW=$QUEUE_WINDOW
        run queue-mode steady-notify --devices 2000 --queue-ratio 0.5 \
            --awake "$QUEUE_AWAKE" --wake-period "$QUEUE_WAKE" --notify-rate 1000 \
            --command-rate 200 --duration 60s --mqtt "127.0.0.1:$MQTT_PORT" \
            --prefix queue || FAILED=1
        QMODE_WINDOW=22s
        ;;
    cpu)
        # Gateway CPU per notification beside the echo sink's CPU per datagram (#12).
        if [ "$BROKER" = embedded ]; then
            echo "note: with BROKER=embedded the gateway's CPU includes the broker's" >&2
        fi
        for rate in $CPU_RATES; do
            run cpu-echo-$rate steady-notify --devices 10000 --notify-rate "$rate" \
                --duration 5s --echo-baseline --echo-sink "$ECHO_SINK" --rounds ${CPU_ROUNDS:-2} --mqtt "127.0.0.1:$MQTT_PORT" \
                --prefix cpu || FAILED=1
        done
        ;;
    *)
        echo "unknown step $step (baseline p2 p2max p3 p4 p5 p6 queue cpu)" >&2
        exit 2
        ;;
    esac
done

log "dashboard"
"$LG" dashboard "${DIRS[@]}" --out perf/dashboard.html
echo "results: ${DIRS[*]}"
exit $FAILED
