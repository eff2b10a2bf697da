#!/usr/bin/env bash
# What listing every client costs the data path (issue #11): a gateway of 2 shards holds
# DEVICES registrations (default 1 000 000, from `loadgen register-storm`) while
# `loadgen steady-notify` keeps NOTIFY_RATE notifications/s flowing; perf/list_paging.py
# then pages through every client with GET /api/v1/clients?limit=1000 and compares the
# shards' pipeline latency (lwm2m_pipeline_seconds from /metrics) while paging with an
# equally long window just before; then the same for 40 pages of a filtered listing
# (`like=pg-12`, ~1 k matches), whose every page scans all endpoints. Results:
# perf/results/list-paging-<UTC>/summary.json and summary-filtered.json (plus the
# gateway's shard-*-pipeline.hlog, 1 s intervals).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000000}
NOTIFY_RATE=${NOTIFY_RATE:-20000}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -q -p lwm2m-gateway -p loadgen
GW=./target/release/lwm2m-gateway
LG=./target/release/loadgen
WORK=$(mktemp -d)
DIR=perf/results/list-paging-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$DIR"
COAP_PORT=$(free_port)
MQTT_PORT=$(free_port)
API_PORT=$(free_port)
GW_PID=""
LG_PID=""
cleanup() {
    [ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null || true
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

sed -e "s|^dir = \"data\"|dir = \"\"|" \
    -e "s|^shards = .*|shards = 2|" \
    -e "s|^bind = \"0.0.0.0:5683\"|bind = \"127.0.0.1:$COAP_PORT\"|" \
    -e "s|^embedded_bind = .*|embedded_bind = \"127.0.0.1:$MQTT_PORT\"|" \
    -e "s|^bind = \"127.0.0.1:8080\"|bind = \"127.0.0.1:$API_PORT\"|" \
    -e "s|^histogram_dir = \"\"|histogram_dir = \"$DIR\"|" \
    -e "s|^histogram_interval = .*|histogram_interval = \"1s\"|" \
    config/gateway.toml >"$WORK/gateway.toml"
"$GW" --config "$WORK/gateway.toml" >"$DIR/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 100); do
    grep -q "gateway running" "$DIR/gateway.log" && break
    sleep 0.1
done

echo "== registering $DEVICES devices"
"$LG" register-storm --devices "$DEVICES" --rate 25000 --sockets 2 --lifetime 3600 \
    --timeout 300s --prefix pg --gateway "127.0.0.1:$COAP_PORT" --out "$DIR/storm" >"$DIR/storm.log" 2>&1
tail -3 "$DIR/storm.log"

echo "== $NOTIFY_RATE notifications/s, then paging"
"$LG" steady-notify --devices 10000 --notify-rate "$NOTIFY_RATE" --con-ratio 0.1 --format tlv \
    --duration 600s --sockets 2 --mqtt "127.0.0.1:$MQTT_PORT" --prefix pgn \
    --gateway "127.0.0.1:$COAP_PORT" --out "$DIR/notify" >"$DIR/notify.log" 2>&1 &
LG_PID=$!
sleep 15
python3 perf/list_paging.py "127.0.0.1:$API_PORT" --limit 1000 --out "$DIR/summary.json"
# A filtered listing: each page counts the matches over every endpoint (in turns).
python3 perf/list_paging.py "127.0.0.1:$API_PORT" --limit 1000 --query "like=pg-12" \
    --requests 40 --out "$DIR/summary-filtered.json"
echo "results: $DIR"
