//! Renders result directories into one self-contained HTML page: inline CSS and SVG, no
//! scripts, no network. Per metric: the percentile spectrum (HdrHistogram's classic plot,
//! log x-axis 0 → 99.999 %) with runs overlaid, p50/p99 over time and throughput over
//! time; then a summary table with the runs side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use crate::metrics::{fmt_ns, histogram, Metric};

/// Run colours, in order (colour-blind friendly Okabe-Ito palette).
const COLORS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];
/// Chart size in px.
const WIDTH: f64 = 420.0;
/// Chart height in px.
const HEIGHT: f64 = 280.0;
/// Plot margins: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (60.0, 30.0, 28.0, 40.0);
/// The spectrum runs to 1 - 10^-NINES (99.999 %).
const NINES: f64 = 5.0;
/// Points per decade of the spectrum.
const SPECTRUM_STEPS: usize = 100;

/// One metric of one run.
struct MetricData {
    metric: String,
    /// `(start s, duration s, histogram)` per interval.
    intervals: Vec<(f64, f64, Histogram<u64>)>,
    total: Histogram<u64>,
}

/// One result directory.
struct Run {
    name: String,
    summary: serde_json::Value,
    metrics: Vec<MetricData>,
}

/// Reads one `.hlog` file.
fn read_hlog(path: &Path) -> anyhow::Result<MetricData> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut intervals = Vec::new();
    // Merged into a histogram of the logged precision: the gateway's batch sizes count
    // from 1, finer than the loadgen's nanosecond histograms.
    let mut total: Option<Histogram<u64>> = None;
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        let LogEntry::Interval(ilh) = entry else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(ilh.encoded_histogram())
            .with_context(|| format!("{}: bad base64", path.display()))?;
        let h: Histogram<u64> = de
            .deserialize(&mut &raw[..])
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        total
            .get_or_insert_with(|| Histogram::new_from(&h))
            .add(&h)
            .context("merging intervals")?;
        intervals.push((
            ilh.start_timestamp().as_secs_f64(),
            ilh.duration().as_secs_f64(),
            h,
        ));
    }
    let metric = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(MetricData {
        metric,
        intervals,
        total: total.unwrap_or_else(histogram),
    })
}

fn read_run(dir: &Path) -> anyhow::Result<Run> {
    let summary_path = dir.join("summary.json");
    let summary: serde_json::Value = match std::fs::read(&summary_path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("parsing {}", summary_path.display()))?,
        Err(_) => serde_json::Value::Null,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "hlog"))
        .collect();
    files.sort_by_key(|p| metric_order(&p.file_stem().unwrap_or_default().to_string_lossy()));
    let mut metrics = files
        .iter()
        .map(|p| read_hlog(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A log with nothing recorded (the gateway's command histogram of a run without
    // commands) is shown as absent rather than as a line at zero.
    metrics.retain(|m| !m.total.is_empty());
    if metrics.is_empty() && summary.is_null() {
        anyhow::bail!("{}: no summary.json and no .hlog files", dir.display());
    }
    let name = summary
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Run {
        name,
        summary,
        metrics,
    })
}

fn metric_order(name: &str) -> (usize, String) {
    let i = Metric::ALL
        .iter()
        .position(|m| m.name() == name)
        .unwrap_or(Metric::ALL.len());
    (i, name.to_string())
}

/// Renders `runs` into the HTML file `out`.
pub fn render_to(runs: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let runs = runs
        .iter()
        .map(|d| read_run(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let html = render(&runs);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

/// One line of a chart.
struct Series {
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy, PartialEq)]
enum XAxis {
    /// Seconds since the start of the run.
    Seconds,
    /// `log10(1 / (1 - q))` labelled as percentiles.
    Percentile,
}

/// A "nice" tick step covering `max` in about 5 steps.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An SVG line chart.
fn chart(
    title: &str,
    y_label: &str,
    x: XAxis,
    series: &[Series],
    legend: &[(&str, bool)],
) -> String {
    let (ml, mr, mt, mb) = MARGIN;
    let (pw, ph) = (WIDTH - ml - mr, HEIGHT - mt - mb);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let x_max = match x {
        XAxis::Percentile => NINES,
        XAxis::Seconds => pts.clone().map(|p| p.0).fold(1.0, f64::max),
    };
    let y_max_raw = pts.map(|p| p.1).fold(0.0, f64::max);
    let y_step = nice_step(y_max_raw);
    let y_max = (y_max_raw / y_step).ceil().max(1.0) * y_step;
    let sx = |v: f64| ml + v.clamp(0.0, x_max) / x_max * pw;
    let sy = |v: f64| mt + ph - v.clamp(0.0, y_max) / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img"><title>{t}</title><text class="title" x="{ml}" y="18">{t}</text>"#,
        t = esc(title)
    );
    let mut v = 0.0;
    while v <= y_max + y_step / 2.0 {
        let y = sy(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{ml}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"#,
            x2 = ml + pw,
            tx = ml - 6.0,
            ty = y + 4.0,
            l = fmt_tick(v)
        );
        v += y_step;
    }
    let x_ticks: Vec<(f64, String)> = match x {
        XAxis::Percentile => (0..=NINES as usize)
            .map(|i| {
                let label = match i {
                    0 => "0%".to_string(),
                    1 => "90%".to_string(),
                    n => format!("99.{}%", "9".repeat(n - 2)).replace("99.%", "99%"),
                };
                (i as f64, label)
            })
            .collect(),
        XAxis::Seconds => {
            let step = nice_step(x_max);
            let mut t = Vec::new();
            let mut v = 0.0;
            while v <= x_max + step / 1e6 {
                t.push((v, fmt_tick(v)));
                v += step;
            }
            t
        }
    };
    for (v, label) in x_ticks {
        let xx = sx(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{xx:.1}" x2="{xx:.1}" y1="{mt}" y2="{yb}"/><text class="tick" x="{xx:.1}" y="{ty}" text-anchor="middle">{label}</text>"#,
            yb = mt + ph,
            ty = mt + ph + 16.0,
        );
    }
    let x_label = match x {
        XAxis::Percentile => "percentile",
        XAxis::Seconds => "seconds since start",
    };
    let _ = write!(
        s,
        r#"<text class="axis" x="{cx}" y="{by}" text-anchor="middle">{x_label}</text><text class="axis" transform="translate(14 {cy}) rotate(-90)" text-anchor="middle">{yl}</text>"#,
        cx = ml + pw / 2.0,
        by = HEIGHT - 6.0,
        cy = mt + ph / 2.0,
        yl = esc(y_label)
    );
    let _ = write!(
        s,
        r#"<rect class="frame" x="{ml}" y="{mt}" width="{pw}" height="{ph}"/>"#
    );
    for line in series {
        if line.points.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (x, y) in &line.points {
            let _ = write!(d, "{:.1},{:.1} ", sx(*x), sy(*y));
        }
        let dash = if line.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
            line.color,
            d.trim_end()
        );
    }
    for (i, (label, dashed)) in legend.iter().enumerate() {
        let lx = ml + pw - 90.0;
        let ly = mt + 14.0 + i as f64 * 16.0;
        let dash = if *dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<line x1="{lx}" x2="{x2}" y1="{ly}" y2="{ly}" stroke="#444" stroke-width="1.8"{dash}/><text class="tick" x="{tx}" y="{ty}">{label}</text>"##,
            x2 = lx + 24.0,
            tx = lx + 30.0,
            ty = ly + 4.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Picks a display unit for latencies up to `max_ns`: (divisor, unit name).
fn unit(max_ns: u64) -> (f64, &'static str) {
    if max_ns < 2_000_000 {
        (1e3, "µs")
    } else if max_ns < 2_000_000_000 {
        (1e6, "ms")
    } else {
        (1e9, "s")
    }
}

/// Histograms of sizes rather than latencies (the gateway's `shard-<n>-uplink-batch.hlog`:
/// PUBLISH packets per socket write).
fn is_count(metric: &str) -> bool {
    metric.ends_with("batch")
}

/// (divisor, unit) for a metric whose largest value is `max`.
fn metric_unit(metric: &str, max: u64) -> (f64, &'static str) {
    if is_count(metric) {
        (1.0, "messages")
    } else {
        unit(max)
    }
}

/// A value of `metric` for the summary table.
fn fmt_value(metric: &str, v: u64) -> String {
    if is_count(metric) {
        v.to_string()
    } else {
        fmt_ns(v)
    }
}

fn spectrum(h: &Histogram<u64>, div: f64) -> Vec<(f64, f64)> {
    (0..=NINES as usize * SPECTRUM_STEPS)
        .map(|i| {
            let x = i as f64 / SPECTRUM_STEPS as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / div)
        })
        .collect()
}

fn metric_section(out: &mut String, metric: &str, runs: &[Run]) {
    let data: Vec<(usize, &MetricData)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.metrics
                .iter()
                .find(|m| m.metric == metric)
                .map(|m| (i, m))
        })
        .collect();
    let max = data.iter().map(|(_, m)| m.total.max()).max().unwrap_or(0);
    let (div, u) = metric_unit(metric, max);
    let spectrum_series: Vec<Series> = data
        .iter()
        .map(|(i, m)| Series {
            color: color(*i),
            dashed: false,
            points: spectrum(&m.total, div),
        })
        .collect();
    let max_p99 = data
        .iter()
        .flat_map(|(_, m)| {
            m.intervals
                .iter()
                .map(|(_, _, h)| h.value_at_quantile(0.99))
        })
        .max()
        .unwrap_or(0);
    let (tdiv, tu) = metric_unit(metric, max_p99);
    let what = if is_count(metric) { "size" } else { "latency" };
    let mut over_time = Vec::new();
    let mut throughput = Vec::new();
    for (i, m) in &data {
        let t0 = m.intervals.first().map_or(0.0, |iv| iv.0);
        let at = |(start, dur, _): &(f64, f64, Histogram<u64>)| start - t0 + dur;
        for (q, dashed) in [(0.5, true), (0.99, false)] {
            over_time.push(Series {
                color: color(*i),
                dashed,
                points: m
                    .intervals
                    .iter()
                    .map(|iv| (at(iv), iv.2.value_at_quantile(q) as f64 / tdiv))
                    .collect(),
            });
        }
        throughput.push(Series {
            color: color(*i),
            dashed: false,
            points: m
                .intervals
                .iter()
                .map(|iv| (at(iv), iv.2.len() as f64 / iv.1.max(1e-9)))
                .collect(),
        });
    }
    let _ = write!(
        out,
        r#"<section><h2>{m}</h2><div class="charts">{a}{b}{c}</div></section>"#,
        m = esc(metric),
        a = chart(
            &format!("{metric}: {what} by percentile"),
            &format!("{what} ({u})"),
            XAxis::Percentile,
            &spectrum_series,
            &[],
        ),
        b = chart(
            &format!("{metric}: {what} over time"),
            &format!("{what} ({tu})"),
            XAxis::Seconds,
            &over_time,
            &[("p99", false), ("p50", true)],
        ),
        c = chart(
            &format!("{metric}: throughput"),
            "per second",
            XAxis::Seconds,
            &throughput,
            &[],
        ),
    );
}

/// Run `i`'s name behind its colour swatch.
fn swatch(i: usize, name: &str) -> String {
    format!(
        r#"<span class="swatch" style="background:{}"></span>{}"#,
        color(i),
        esc(name)
    )
}

fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => esc(s),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Some(serde_json::Value::Null) | None => "–".into(),
        Some(other) => esc(&other.to_string()),
    }
}

fn summary_table(out: &mut String, runs: &[Run], metrics: &[String]) {
    out.push_str("<section><h2>Summary</h2><table><thead><tr><th></th>");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(out, "<th>{}</th>", swatch(i, &r.name));
    }
    out.push_str("</tr></thead><tbody>");
    let mut row = |label: &str, f: &dyn Fn(&Run) -> String| {
        let _ = write!(out, "<tr><th>{}</th>", esc(label));
        for r in runs {
            let _ = write!(out, "<td>{}</td>", f(r));
        }
        out.push_str("</tr>");
    };
    for key in [
        "scenario",
        "start",
        "duration_s",
        "devices",
        "sockets",
        "ok",
        "errors",
        "timeouts",
    ] {
        row(key, &|r| cell(r.summary.get(key)));
    }
    row("args", &|r| {
        r.summary
            .get("args")
            .and_then(|a| a.as_array())
            .map(|a| {
                let words: Vec<&str> = a.iter().filter_map(|w| w.as_str()).collect();
                format!("<code>{}</code>", esc(&words.join(" ")))
            })
            .unwrap_or_else(|| "–".into())
    });
    for m in metrics {
        row(&format!("{m} count"), &|r| {
            r.metrics
                .iter()
                .find(|d| &d.metric == m)
                .map_or("–".into(), |d| d.total.len().to_string())
        });
        row(&format!("{m} throughput/s"), &|r| {
            cell(r.summary.pointer(&format!("/metrics/{m}/throughput_per_s")))
        });
        for (label, q) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p99", 0.99),
            ("p99.9", 0.999),
            ("max", 1.0),
        ] {
            row(&format!("{m} {label}"), &|r| {
                r.metrics
                    .iter()
                    .find(|d| &d.metric == m)
                    .map_or("–".into(), |d| fmt_value(m, d.total.value_at_quantile(q)))
            });
        }
    }
    for (label, key) in [
        ("gateway RSS at start (MiB)", "rss_start_mib"),
        ("gateway RSS at end (MiB)", "rss_end_mib"),
        ("gateway RSS peak (MiB)", "rss_peak_mib"),
        ("gateway CPU (s)", "cpu_s"),
    ] {
        row(label, &|r| {
            cell(r.summary.pointer(&format!("/gateway/{key}")))
        });
    }
    for key in ["cores", "cpu", "kernel"] {
        row(key, &|r| {
            cell(r.summary.pointer(&format!("/machine/{key}")))
        });
    }
    out.push_str("</tbody></table></section>");
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #ddd}\
.legend span{margin-right:18px;white-space:nowrap}.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px;border-radius:2px}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #eee;background:#fcfcfc}\
.chart .title{font-size:13px;font-weight:600}.chart .tick{font-size:11px;fill:#555}.chart .axis{font-size:11px;fill:#333}\
.chart .grid{stroke:#e4e4e4;stroke-width:1}.chart .frame{fill:none;stroke:#bbb}\
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}\
thead th{background:#f3f3f3}tbody th{text-align:left;font-weight:500;background:#fafafa}code{font-size:12px}";

/// The HTML page for `runs`.
fn render(runs: &[Run]) -> String {
    let mut metrics: Vec<String> = Vec::new();
    for r in runs {
        for m in &r.metrics {
            if !metrics.contains(&m.metric) {
                metrics.push(m.metric.clone());
            }
        }
    }
    metrics.sort_by_key(|m| metric_order(m));
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>loadgen results</title><style>{CSS}</style></head><body><h1>lwm2m-gateway loadgen results</h1><p class="legend">"#
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(out, "<span>{}</span>", swatch(i, &r.name));
    }
    out.push_str("</p>");
    for m in &metrics {
        metric_section(&mut out, m, runs);
    }
    summary_table(&mut out, runs, &metrics);
    out.push_str("<p><small>Latencies are measured open-loop from each request's due time; HdrHistogram interval logs (.hlog) of every run sit next to its summary.json.</small></p></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2DeflateSerializer;
    use std::time::Duration;

    fn synthetic_run(dir: &Path, scale: u64) {
        std::fs::create_dir_all(dir).expect("dir");
        write_hlog(
            &dir.join("register.hlog"),
            histogram,
            |v| v * 1_000 * scale,
            1000,
        );
        let summary = serde_json::json!({
            "name": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "scenario": "register-storm", "ok": 5000, "errors": 0, "timeouts": 0,
            "metrics": {"register": {"throughput_per_s": 1000.0}},
            "machine": {"cores": 2, "kernel": "6.1.0"}
        });
        std::fs::write(dir.join("summary.json"), summary.to_string()).expect("summary");
    }

    /// Five 1 s intervals, each recording `value(1..=n)`.
    fn write_hlog(
        path: &Path,
        new: impl Fn() -> Histogram<u64>,
        value: impl Fn(u64) -> u64,
        n: u64,
    ) {
        let mut file = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut file, &mut ser)
            .expect("log");
        for second in 0..5u64 {
            let mut h = new();
            for v in 1..=n {
                h.record(value(v)).expect("in range");
            }
            w.write_histogram(
                &h,
                Duration::from_secs(second),
                Duration::from_secs(1),
                None,
            )
            .expect("write");
        }
        drop(w);
        std::fs::write(path, file).expect("hlog");
    }

    #[test]
    fn gateway_histograms_and_memory_render_in_their_units() {
        let base = std::env::temp_dir().join(format!("loadgen-dash-gw-{}", std::process::id()));
        let dir = base.join("gw-run");
        std::fs::create_dir_all(&dir).expect("dir");
        let sizes = || Histogram::new_with_bounds(1, 1 << 20, 3).expect("bounds");
        write_hlog(&dir.join("shard-0-uplink-batch.hlog"), sizes, |v| v, 128);
        write_hlog(
            &dir.join("shard-0-pipeline.hlog"),
            histogram,
            |v| v * 1_000,
            100,
        );
        write_hlog(&dir.join("shard-0-command.hlog"), histogram, |v| v, 0);
        let summary = serde_json::json!({"name": "gw-run", "gateway": {"rss_end_mib": 312.5}});
        std::fs::write(dir.join("summary.json"), summary.to_string()).expect("summary");
        let out = base.join("dash.html");
        render_to(&[dir], &out).expect("render");
        let html = std::fs::read_to_string(&out).expect("html");
        assert!(html.contains("shard-0-uplink-batch: size by percentile"));
        assert!(html.contains("shard-0-pipeline: latency by percentile"));
        // Batch sizes 1..=128 are counts, not nanoseconds.
        assert!(
            html.contains("<th>shard-0-uplink-batch p50</th><td>64</td>"),
            "{html}"
        );
        assert!(html.contains("<th>gateway RSS at end (MiB)</th><td>312.5</td>"));
        assert!(!html.contains("shard-0-command"), "empty logs are left out");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn renders_synthetic_runs_side_by_side() {
        let base = std::env::temp_dir().join(format!("loadgen-dash-{}", std::process::id()));
        let (a, b) = (base.join("run-a"), base.join("run-b<x>"));
        synthetic_run(&a, 1);
        synthetic_run(&b, 2);
        let out = base.join("dash.html");
        render_to(&[a, b], &out).expect("render");
        let html = std::fs::read_to_string(&out).expect("html");
        assert_eq!(
            html.matches("<svg").count(),
            3,
            "three charts for one metric"
        );
        // Spectrum (2 runs) + p50/p99 over time (4) + throughput (2).
        assert_eq!(html.matches("<polyline").count(), 8);
        assert!(html.contains("register: latency by percentile"));
        assert!(html.contains(">99.999%<"));
        assert!(html.contains("run-b&lt;x&gt;"), "names are escaped");
        // p50 of 1..=1000 µs is 500 µs; run b is twice as slow.
        assert!(
            html.contains("<td>500µs</td><td>1.00ms</td>"),
            "p50 side by side"
        );
        assert!(html.contains("<td>5000</td><td>5000</td>"), "counts");
        assert!(
            !html.contains("<script") && !html.contains("http"),
            "self-contained"
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
    }
}
