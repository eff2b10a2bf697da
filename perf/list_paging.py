#!/usr/bin/env python3
"""Pages through every client of a running gateway with GET /api/v1/clients?limit=1000
and reports what that cost the shards' datagram pipelines: the lwm2m_pipeline_seconds
histogram of /metrics over the paging window, next to an equally long window just before
it (same traffic, no paging). Used by perf/list_paging.sh.

    perf/list_paging.py API_ADDR [--limit 1000] [--query like=pg-12] [--requests N]
                        [--out summary.json]

With --query the pages are those of a filtered listing; --requests N asks N pages in
turn (cycling through them), to measure a filter's scan cost over a window long enough.
"""
import argparse
import json
import time
import urllib.request


def get(api, path):
    with urllib.request.urlopen(f"http://{api}{path}", timeout=30) as r:
        return r.read().decode()


def buckets(api):
    """Cumulative lwm2m_pipeline_seconds buckets summed over shards: {le: count}."""
    out = {}
    for line in get(api, "/metrics").splitlines():
        if line.startswith("lwm2m_pipeline_seconds_bucket{"):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="')[1].split('"')[0]
            out[le] = out.get(le, 0) + int(float(value))
    return out


def summary(before, after):
    """Datagrams and the bucket bounds holding their p50, p99, p99.9 and max."""
    keys = sorted(after, key=lambda k: float("inf") if k == "+Inf" else float(k))
    delta = [(k, after[k] - before.get(k, 0)) for k in keys]
    total = delta[-1][1] if delta else 0
    res = {"datagrams": total}
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)):
        want = max(1, int(total * q + 0.999999)) if total else 0
        res[name] = next((k for k, c in delta if c >= want), None) if total else None
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("api")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--query", default="")
    ap.add_argument("--requests", type=int)
    ap.add_argument("--out")
    a = ap.parse_args()
    q = f"&{a.query}" if a.query else ""

    first = json.loads(get(a.api, f"/api/v1/clients?limit={a.limit}&page=1{q}"))
    total = first["meta"]["count"]
    pages = max(1, (total + a.limit - 1) // a.limit)
    requests = a.requests or pages
    # Baseline window: as long as paging is expected to take (measured on 20 pages).
    t = time.monotonic()
    for i in range(20):
        get(a.api, f"/api/v1/clients?limit={a.limit}&page={i % pages + 1}{q}")
    per_page = (time.monotonic() - t) / 20
    window = max(5.0, per_page * requests)
    b0 = buckets(a.api)
    time.sleep(window)
    b1 = buckets(a.api)

    listed, times = 0, []
    began = time.monotonic()
    for i in range(requests):
        t = time.monotonic()
        body = json.loads(get(a.api, f"/api/v1/clients?limit={a.limit}&page={i % pages + 1}{q}"))
        times.append(time.monotonic() - t)
        listed += len(body["data"])
    paging = time.monotonic() - began
    b2 = buckets(a.api)
    times.sort()
    pct = lambda q: round(times[min(len(times) - 1, int(len(times) * q))] * 1e3, 2)
    out = {
        "query": a.query,
        "clients": total,
        "listed": listed,
        "pages": pages,
        "requests": requests,
        "limit": a.limit,
        "paging_secs": round(paging, 2),
        "page_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": round(times[-1] * 1e3, 2)},
        "pipeline_without_paging": summary(b0, b1),
        "pipeline_while_paging": summary(b1, b2),
    }
    print(json.dumps(out, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
