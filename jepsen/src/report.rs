//! The report a human reads after a run, written next to `history.jsonl` and
//! `summary.json` by [`write_report`]:
//!
//! - `timeline.html` — the verdict and its anomalies, the operations counted by kind and
//!   outcome, the faults; then every operation as a bar on its process's lane, from
//!   invocation to completion, coloured by outcome, with the nemesis's faults shaded across
//!   all lanes; hovering a bar shows its `f`, value, error and latency. The two charts below
//!   are inlined too, so the page is one self-contained file: no scripts, no fonts, no
//!   network.
//! - `latency.svg` — each completed operation's latency (ms, log scale) against the time it
//!   completed, coloured by outcome, faults shaded.
//! - `throughput.svg` — `ok` operations per second over time, one line per `f`, faults
//!   shaded.
//!
//! Nemesis events are the runner's: process-independent `f = "nemesis"` pairs, a fault's
//! description then `"heal"`; a fault is on from its completion to the heal's invocation.
//! Every text taken from the history or the summary is escaped: values come from the
//! network. At most [`MAX_DRAWN_OPS`] operations are drawn (the page says so when there are
//! more); counts and charts' scales still use them all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::history::{Op, OpType, pairs};

/// Operations drawn on the timeline and the latency chart (the first ones, by invocation).
pub const MAX_DRAWN_OPS: usize = 20_000;

/// Longest text (in characters) of a value or error shown in a hover title.
const TITLE_CHARS: usize = 300;

const OK: &str = "#2e9d49";
const FAIL: &str = "#d93a32";
const INFO: &str = "#f0a020";
const FAULT: &str = "#9b59b6";
/// Line colours for the throughput chart, one per `f` in turn.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Writes `timeline.html`, `latency.svg` and `throughput.svg` into `dir` (created if
/// missing). `summary` is the checker's verdict as JSON (`valid`, anomaly lists, `error`…).
pub fn write_report(dir: &Path, ops: &[Op], summary: &serde_json::Value) -> std::io::Result<()> {
    write_report_capped(dir, ops, summary, MAX_DRAWN_OPS)
}

fn write_report_capped(
    dir: &Path,
    ops: &[Op],
    summary: &serde_json::Value,
    cap: usize,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let run = Run::new(ops, cap);
    let latency = latency_svg(&run);
    let throughput = throughput_svg(&run);
    std::fs::write(dir.join("latency.svg"), xml_file(&latency))?;
    std::fs::write(dir.join("throughput.svg"), xml_file(&throughput))?;
    std::fs::write(
        dir.join("timeline.html"),
        timeline_html(&run, summary, &latency, &throughput),
    )?;
    Ok(())
}

/// One client operation: its invocation and completion.
struct Bar<'a> {
    inv: &'a Op,
    done: Option<&'a Op>,
}

impl Bar<'_> {
    /// How it completed; `None`: it never did.
    fn outcome(&self) -> Option<OpType> {
        self.done.map(|d| d.kind)
    }

    fn latency_ns(&self) -> Option<u64> {
        self.done
            .map(|d| d.mono_ns.saturating_sub(self.inv.mono_ns))
    }
}

/// A fault the nemesis had on, from `from` to `to` (monotonic ns; `None`: to the end).
struct Fault {
    from: u64,
    to: Option<u64>,
    label: String,
}

/// The history arranged for drawing.
struct Run<'a> {
    /// Client operations, by invocation.
    bars: Vec<Bar<'a>>,
    /// How many of `bars` are drawn.
    drawn: usize,
    faults: Vec<Fault>,
    /// Client processes, sorted: one lane each.
    lanes: Vec<u64>,
    /// The history's first and last monotonic time.
    t0: u64,
    t1: u64,
    /// Why the history could not be paired, if it could not.
    error: Option<String>,
}

impl<'a> Run<'a> {
    fn new(ops: &'a [Op], cap: usize) -> Run<'a> {
        let t0 = ops.iter().map(|o| o.mono_ns).min().unwrap_or(0);
        let t1 = ops.iter().map(|o| o.mono_ns).max().unwrap_or(0);
        let mut run = Run {
            bars: Vec::new(),
            drawn: 0,
            faults: Vec::new(),
            lanes: Vec::new(),
            t0,
            t1,
            error: None,
        };
        let ps = match pairs(ops) {
            Ok(p) => p,
            Err(e) => {
                run.error = Some(e);
                return run;
            }
        };
        for (inv, done) in ps {
            if inv.f != "nemesis" {
                run.bars.push(Bar { inv, done });
                continue;
            }
            if inv.value.as_str() == Some("heal") {
                for f in run.faults.iter_mut().filter(|f| f.to.is_none()) {
                    f.to = Some(inv.mono_ns);
                }
            } else {
                run.faults.push(Fault {
                    from: done.map_or(inv.mono_ns, |d| d.mono_ns),
                    to: None,
                    label: text_of(&inv.value),
                });
            }
        }
        run.drawn = run.bars.len().min(cap);
        let mut lanes: Vec<u64> = run.bars.iter().map(|b| b.inv.process).collect();
        lanes.sort_unstable();
        lanes.dedup();
        run.lanes = lanes;
        run
    }

    /// Seconds since the start of the history.
    fn secs(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.t0) as f64 / 1e9
    }

    fn duration_s(&self) -> f64 {
        self.secs(self.t1).max(1e-3)
    }
}

/// A JSON value as a line of text: strings bare, everything else as compact JSON.
fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// At most `n` characters, with an ellipsis if cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n).collect();
        c.push('…');
        c
    }
}

/// Escapes text for XML/HTML content and double-quoted attributes. Control characters other
/// than tab and newline (not allowed in XML) become U+FFFD.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn outcome_colour(o: Option<OpType>) -> &'static str {
    match o {
        Some(OpType::Ok) => OK,
        Some(OpType::Fail) => FAIL,
        _ => INFO,
    }
}

fn outcome_name(o: Option<OpType>) -> &'static str {
    match o {
        Some(OpType::Ok) => "ok",
        Some(OpType::Fail) => "fail",
        Some(OpType::Info) => "info",
        Some(OpType::Invoke) | None => "never completed",
    }
}

/// A round step for `span` units split in about `ticks` parts (1, 2 or 5 × 10^k).
fn nice_step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks.max(1.0)).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A number for an axis label: no trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// A chart's plotting area and time axis.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    /// Seconds at the right edge.
    span_s: f64,
}

impl Frame {
    fn x(&self, s: f64) -> f64 {
        self.left + (s / self.span_s).clamp(0.0, 1.0) * self.width
    }

    /// The time axis under the area, with light vertical grid lines.
    fn time_axis(&self, svg: &mut String) {
        let bottom = self.top + self.height;
        let step = nice_step(self.span_s, self.width / 90.0);
        let _ = write!(
            svg,
            r##"<line x1="{l:.1}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}" stroke="#444"/>"##,
            l = self.left,
            r = self.left + self.width,
            b = bottom
        );
        let mut i = 0u64;
        while (i as f64) * step <= self.span_s + 1e-9 && i < 10_000 {
            let t = i as f64 * step;
            let x = self.x(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{t0:.1}" x2="{x:.1}" y2="{b:.1}" stroke="#eee"/><text x="{x:.1}" y="{ty:.1}" font-size="10" text-anchor="middle">{lab} s</text>"##,
                t0 = self.top,
                b = bottom,
                ty = bottom + 13.0,
                lab = num(t)
            );
            i += 1;
        }
    }

    /// The faults, shaded from top to bottom, each with its description as a hover title and
    /// (if there is room) a label.
    fn faults(&self, run: &Run<'_>, svg: &mut String, labels: bool) {
        for f in &run.faults {
            let x1 = self.x(run.secs(f.from));
            let x2 = self.x(run.secs(f.to.unwrap_or(run.t1)));
            let w = (x2 - x1).max(1.0);
            let until =
                f.to.map_or("the end".to_string(), |t| format!("{} s", num(run.secs(t))));
            let _ = write!(
                svg,
                r#"<rect x="{x1:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{FAULT}" fill-opacity="0.13"><title>{t}</title></rect>"#,
                y = self.top,
                h = self.height,
                t = esc(&format!(
                    "fault: {}\nfrom {} s to {until}",
                    clip(&f.label, TITLE_CHARS),
                    num(run.secs(f.from))
                ))
            );
            if labels {
                let _ = write!(
                    svg,
                    r#"<text x="{x:.1}" y="{y:.1}" font-size="10" fill="{FAULT}">{t}</text>"#,
                    x = x1 + 2.0,
                    y = self.top - 4.0,
                    t = esc(&clip(&f.label, 40))
                );
            }
        }
    }
}

fn legend(svg: &mut String, x: f64, y: f64, items: &[(&str, String)]) {
    let mut x = x;
    for (colour, name) in items {
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{ry:.1}" width="10" height="10" fill="{colour}"/><text x="{tx:.1}" y="{y:.1}" font-size="11">{n}</text>"#,
            ry = y - 9.0,
            tx = x + 14.0,
            n = esc(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

fn outcome_legend() -> Vec<(&'static str, String)> {
    vec![
        (OK, "ok".into()),
        (FAIL, "fail".into()),
        (INFO, "info / never completed".into()),
        (FAULT, "fault on".into()),
    ]
}

fn svg_open(width: f64, height: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    )
}

fn xml_file(svg: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{svg}\n")
}

/// The lanes: one per process, a bar per operation, faults behind.
fn timeline_svg(run: &Run<'_>) -> String {
    const LANE: f64 = 16.0;
    let frame = Frame {
        left: 90.0,
        top: 34.0,
        width: (run.duration_s() * 40.0).clamp(900.0, 12_000.0),
        height: LANE * run.lanes.len().max(1) as f64,
        span_s: run.duration_s(),
    };
    let mut svg = svg_open(
        frame.left + frame.width + 20.0,
        frame.top + frame.height + 40.0,
    );
    legend(&mut svg, frame.left, 14.0, &outcome_legend());
    frame.time_axis(&mut svg);
    frame.faults(run, &mut svg, true);
    let lane_of: BTreeMap<u64, usize> =
        run.lanes.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    for (i, p) in run.lanes.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="10" text-anchor="end">process {p}</text>"#,
            x = frame.left - 6.0,
            y = frame.top + LANE * i as f64 + 11.0
        );
    }
    for b in &run.bars[..run.drawn] {
        let lane = lane_of.get(&b.inv.process).copied().unwrap_or(0);
        let x1 = frame.x(run.secs(b.inv.mono_ns));
        let x2 = frame.x(run.secs(b.done.map_or(run.t1, |d| d.mono_ns)));
        let o = b.outcome();
        let mut title = format!(
            "{} — {}\nprocess {}, op {}",
            b.inv.f,
            outcome_name(o),
            b.inv.process,
            b.inv.index
        );
        let _ = write!(
            title,
            "\nvalue: {}",
            clip(&text_of(&b.inv.value), TITLE_CHARS)
        );
        if let Some(d) = b.done {
            if d.value != b.inv.value {
                let _ = write!(
                    title,
                    "\nreturned: {}",
                    clip(&text_of(&d.value), TITLE_CHARS)
                );
            }
            if let Some(e) = &d.error {
                let _ = write!(title, "\nerror: {}", clip(e, TITLE_CHARS));
            }
        }
        if let Some(l) = b.latency_ns() {
            let _ = write!(title, "\nlatency: {} ms", num(l as f64 / 1e6));
        }
        let dash = if b.done.is_none() {
            r##" fill-opacity="0.5" stroke="#a06000" stroke-dasharray="2,2""##
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<rect x="{x1:.1}" y="{y:.1}" width="{w:.1}" height="10" fill="{c}"{dash}><title>{t}</title></rect>"#,
            y = frame.top + LANE * lane as f64 + 3.0,
            w = (x2 - x1).max(1.0),
            c = outcome_colour(o),
            t = esc(&title)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Latency (log scale) against completion time, a dot per completed operation.
fn latency_svg(run: &Run<'_>) -> String {
    let frame = Frame {
        left: 70.0,
        top: 40.0,
        width: 820.0,
        height: 300.0,
        span_s: run.duration_s(),
    };
    let mut svg = svg_open(920.0, 380.0);
    let _ = write!(
        svg,
        r#"<text x="{x:.1}" y="16" font-size="13">Latency (ms, log scale) by completion time</text>"#,
        x = frame.left
    );
    legend(&mut svg, frame.left, 32.0, &outcome_legend());
    let points: Vec<(f64, f64, Option<OpType>)> = run.bars[..run.drawn]
        .iter()
        .filter_map(|b| {
            let d = b.done?;
            let ms = (b.latency_ns()? as f64 / 1e6).max(1e-3);
            Some((run.secs(d.mono_ns), ms, b.outcome()))
        })
        .collect();
    let lo = points
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        .log10()
        .floor();
    let hi = points
        .iter()
        .map(|p| p.1)
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y = |ms: f64| {
        frame.top + frame.height * (1.0 - ((ms.log10() - lo) / (hi - lo)).clamp(0.0, 1.0))
    };
    frame.time_axis(&mut svg);
    frame.faults(run, &mut svg, false);
    let mut k = lo;
    while k <= hi + 1e-9 {
        let ms = 10f64.powf(k);
        let yy = y(ms);
        let label = if ms >= 1000.0 {
            format!("{} s", num(ms / 1000.0))
        } else {
            format!("{} ms", num(ms))
        };
        let _ = write!(
            svg,
            r##"<line x1="{l:.1}" y1="{yy:.1}" x2="{r:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{tx:.1}" y="{ty:.1}" font-size="10" text-anchor="end">{label}</text>"##,
            l = frame.left,
            r = frame.left + frame.width,
            tx = frame.left - 5.0,
            ty = yy + 3.0
        );
        k += 1.0;
    }
    for (t, ms, o) in &points {
        let _ = write!(
            svg,
            r#"<circle cx="{x:.1}" cy="{yy:.1}" r="2" fill="{c}" fill-opacity="0.7"/>"#,
            x = frame.x(*t),
            yy = y(*ms),
            c = outcome_colour(*o)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `ok` operations per second over time, a line per `f`.
fn throughput_svg(run: &Run<'_>) -> String {
    let frame = Frame {
        left: 70.0,
        top: 40.0,
        width: 820.0,
        height: 300.0,
        span_s: run.duration_s(),
    };
    // At most ~300 buckets, each a whole number of seconds (or less for short runs).
    let bucket = if frame.span_s <= 30.0 {
        nice_step(frame.span_s, 30.0)
    } else {
        (frame.span_s / 300.0).ceil().max(1.0)
    };
    let buckets = (frame.span_s / bucket).ceil().max(1.0) as usize;
    let mut by_f: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for b in &run.bars {
        if let Some(d) = b.done.filter(|d| d.kind == OpType::Ok) {
            let i = ((run.secs(d.mono_ns) / bucket) as usize).min(buckets - 1);
            by_f.entry(b.inv.f.as_str())
                .or_insert_with(|| vec![0; buckets])[i] += 1;
        }
    }
    let peak = by_f
        .values()
        .flat_map(|v| v.iter())
        .map(|n| *n as f64 / bucket)
        .fold(0.0, f64::max);
    let step = nice_step(peak.max(1.0), 5.0);
    let top_rate = (peak / step).ceil().max(1.0) * step;
    let y = |rate: f64| frame.top + frame.height * (1.0 - (rate / top_rate).clamp(0.0, 1.0));
    let mut svg = svg_open(920.0, 380.0);
    let _ = write!(
        svg,
        r#"<text x="{x:.1}" y="16" font-size="13">ok operations per second ({b} s buckets)</text>"#,
        x = frame.left,
        b = num(bucket)
    );
    let mut items: Vec<(&str, String)> = by_f
        .keys()
        .enumerate()
        .map(|(i, f)| (PALETTE[i % PALETTE.len()], clip(f, 30)))
        .collect();
    items.push((FAULT, "fault on".into()));
    legend(&mut svg, frame.left, 32.0, &items);
    frame.time_axis(&mut svg);
    frame.faults(run, &mut svg, false);
    let mut i = 0u64;
    while (i as f64) * step <= top_rate + 1e-9 && i < 1_000 {
        let rate = i as f64 * step;
        let yy = y(rate);
        let _ = write!(
            svg,
            r##"<line x1="{l:.1}" y1="{yy:.1}" x2="{r:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{tx:.1}" y="{ty:.1}" font-size="10" text-anchor="end">{lab}/s</text>"##,
            l = frame.left,
            r = frame.left + frame.width,
            tx = frame.left - 5.0,
            ty = yy + 3.0,
            lab = num(rate)
        );
        i += 1;
    }
    for (n, (f, counts)) in by_f.iter().enumerate() {
        let points: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{:.1},{:.1}",
                    frame.x((i as f64 + 0.5) * bucket),
                    y(*c as f64 / bucket)
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{p}" fill="none" stroke="{c}" stroke-width="1.5"><title>{t}</title></polyline>"#,
            p = points.join(" "),
            c = PALETTE[n % PALETTE.len()],
            t = esc(f)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The verdict's anomalies, as lines: non-empty lists (with their first items), errors,
/// and nested verdicts that are not valid.
fn anomalies(summary: &serde_json::Value, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Some(fields) = summary.as_object() else {
        return;
    };
    for (k, v) in fields {
        let name = format!("{prefix}{k}");
        match v {
            serde_json::Value::Array(a) if !a.is_empty() && k != "excerpt" => {
                let first: Vec<String> = a.iter().take(5).map(|x| clip(&text_of(x), 120)).collect();
                let more = if a.len() > 5 { ", …" } else { "" };
                out.push(format!("{name}: {} ({}{more})", a.len(), first.join(", ")));
            }
            serde_json::Value::String(e) if k == "error" || k == "reason" => {
                out.push(format!("{name}: {}", clip(e, 500)));
            }
            serde_json::Value::Object(o) if depth < 3 => {
                if o.get("valid") == Some(&serde_json::Value::Bool(false)) {
                    out.push(format!("{name}: not valid"));
                }
                anomalies(v, &format!("{name}."), depth + 1, out);
            }
            _ => {}
        }
    }
}

fn timeline_html(
    run: &Run<'_>,
    summary: &serde_json::Value,
    latency: &str,
    throughput: &str,
) -> String {
    let (verdict, colour) = match (
        summary.get("valid").and_then(|v| v.as_bool()),
        summary.get("outcome").and_then(|v| v.as_str()),
    ) {
        (_, Some("unknown")) => ("UNKNOWN", INFO),
        (Some(true), _) => ("VALID", OK),
        (Some(false), _) => ("INVALID", FAIL),
        (None, _) => ("no verdict", INFO),
    };
    let mut h = String::new();
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>",
        "<title>Halyard Jepsen report</title><style>",
        "body{font-family:sans-serif;margin:1.5em;color:#222}",
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}",
        "th:first-child,td:first-child{text-align:left}",
        ".scroll{overflow-x:auto;border:1px solid #ddd}pre{white-space:pre-wrap;word-break:break-all}",
        "</style></head><body>\n"
    ));
    let _ = write!(
        h,
        r#"<h1>Halyard Jepsen report: <span style="color:{colour}">{verdict}</span></h1>"#
    );
    let mut found = Vec::new();
    anomalies(summary, "", 0, &mut found);
    if let Some(e) = &run.error {
        found.push(format!("the history could not be paired: {e}"));
    }
    if found.is_empty() {
        h.push_str("<p>No anomalies reported.</p>\n");
    } else {
        h.push_str("<h2>Anomalies</h2><ul>");
        for a in &found {
            let _ = write!(h, "<li>{}</li>", esc(a));
        }
        h.push_str("</ul>\n");
    }
    // Operations by f and outcome.
    let mut counts: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    for b in &run.bars {
        let i = match b.outcome() {
            Some(OpType::Ok) => 0,
            Some(OpType::Fail) => 1,
            Some(OpType::Info) => 2,
            _ => 3,
        };
        counts.entry(b.inv.f.as_str()).or_default()[i] += 1;
    }
    let _ = write!(
        h,
        "<h2>Operations</h2><p>{} operations by {} processes over {} s.</p>",
        run.bars.len(),
        run.lanes.len(),
        num(run.duration_s())
    );
    h.push_str(
        "<table><tr><th>f</th><th>ok</th><th>fail</th><th>info</th><th>never completed</th></tr>",
    );
    for (f, c) in &counts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&clip(f, 60)),
            c[0],
            c[1],
            c[2],
            c[3]
        );
    }
    h.push_str("</table>\n");
    if !run.faults.is_empty() {
        h.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>from (s)</th><th>to (s)</th></tr>");
        for f in &run.faults {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&clip(&f.label, 200)),
                num(run.secs(f.from)),
                f.to.map_or("the end".into(), |t| num(run.secs(t)))
            );
        }
        h.push_str("</table>\n");
    }
    let pretty = serde_json::to_string_pretty(summary).unwrap_or_default();
    let _ = writeln!(
        h,
        "<details><summary>summary.json</summary><pre>{}</pre></details>",
        esc(&pretty)
    );
    h.push_str("<h2>Timeline</h2>");
    if run.drawn < run.bars.len() {
        let _ = write!(
            h,
            "<p><strong>Showing the first {} of {} operations</strong> (by invocation); the \
             counts above and the throughput chart use them all.</p>",
            run.drawn,
            run.bars.len()
        );
    }
    h.push_str(
        "<p>One lane per process; hover a bar for its operation, a shaded band for its fault.</p>",
    );
    let _ = writeln!(h, "<div class=\"scroll\">{}</div>", timeline_svg(run));
    let _ = writeln!(h, "<h2>Latency</h2><div>{latency}</div>");
    let _ = writeln!(h, "<h2>Throughput</h2><div>{throughput}</div>");
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use OpType::*;

    /// A history from (process, type, f, value, error) tuples, 100 ms apart.
    fn h(ops: &[(u64, OpType, &str, Value, Option<&str>)]) -> Vec<Op> {
        ops.iter()
            .enumerate()
            .map(|(i, (p, k, f, v, e))| Op {
                index: i as u64,
                process: *p,
                kind: *k,
                f: f.to_string(),
                value: v.clone(),
                time_ms: 1_700_000_000_000 + i as i64 * 100,
                mono_ns: i as u64 * 100_000_000,
                node: None,
                error: e.map(String::from),
            })
            .collect()
    }

    const N: u64 = u64::MAX;

    fn sample() -> Vec<Op> {
        h(&[
            (
                0,
                Invoke,
                "write",
                json!({"key": "m1", "value": ["$j1"]}),
                None,
            ),
            (1, Invoke, "read", json!({"key": "m1", "value": null}), None),
            (0, Ok, "write", json!({"key": "m1", "value": ["$j1"]}), None),
            (N, Invoke, "nemesis", json!("partition [1] [2 3]"), None),
            (N, Info, "nemesis", json!("partition [1] [2 3]"), None),
            (
                1,
                Ok,
                "read",
                json!({"key": "m1", "value": ["<script>alert(1)</script>"]}),
                None,
            ),
            (2, Invoke, "send", json!("tok & \"quoted\" \u{1}"), None),
            (0, Invoke, "write", json!({"key": "m1", "value": []}), None),
            (
                2,
                Info,
                "send",
                json!("tok & \"quoted\" \u{1}"),
                Some("timeout <5 s>"),
            ),
            (
                0,
                Fail,
                "write",
                json!({"key": "m1", "value": []}),
                Some("NO"),
            ),
            (N, Invoke, "nemesis", json!("heal"), None),
            (N, Info, "nemesis", json!("heal"), None),
            (3, Invoke, "read", json!({"key": "m1", "value": null}), None),
        ])
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "halyard-report-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    /// Every tag closed in order (void elements written self-closed); `<!…>` and `<?…?>`
    /// skipped. Returns the first problem.
    fn balanced(doc: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = doc;
        for _ in 0..doc.len() {
            let Some(open) = rest.find('<') else {
                break;
            };
            rest = &rest[open..];
            let close = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..close];
            rest = &rest[close + 1..];
            if tag.starts_with('!') || tag.starts_with('?') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(top) if top == name => {}
                    top => return Err(format!("</{name}> closes {top:?}")),
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or("");
                stack.push(name.to_string());
            }
        }
        if stack.is_empty() {
            Result::Ok(())
        } else {
            Err(format!("unclosed: {stack:?}"))
        }
    }

    #[test]
    fn a_report_is_written_well_formed_and_escaped() {
        let dir = temp_dir("sample");
        let summary = json!({
            "valid": false,
            "lost": ["a<b", "c"],
            "duplicated": [],
            "error": null,
            "linearizable": {"valid": false, "invalid_keys": ["m1"]},
        });
        write_report(&dir, &sample(), &summary).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let (html, latency, throughput) = (
            read("timeline.html"),
            read("latency.svg"),
            read("throughput.svg"),
        );
        std::fs::remove_dir_all(&dir).unwrap();

        for (name, doc) in [
            ("html", &html),
            ("latency", &latency),
            ("throughput", &throughput),
        ] {
            balanced(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                doc.matches("<svg").count(),
                doc.matches("</svg>").count(),
                "{name}"
            );
            assert!(!doc.contains("NaN") && !doc.contains("inf\""), "{name}");
            assert!(!doc.contains('\u{1}'), "{name}: a control character");
        }
        assert_eq!(html.matches("<svg").count(), 3);
        // The verdict and its anomalies come first.
        assert!(html.find("INVALID").unwrap() < html.find("<svg").unwrap());
        assert!(html.contains("lost: 2 (a&lt;b, c)"), "{html}");
        assert!(html.contains("linearizable: not valid"));
        assert!(!html.contains("duplicated:"));
        // The fault: shaded with its label, in the faults table, from 0.4 s to 1 s.
        assert!(html.contains("partition [1] [2 3]"));
        assert!(html.contains("<td>partition [1] [2 3]</td><td>0.4</td><td>1</td>"));
        assert!(latency.contains("fault: partition [1] [2 3]"));
        assert!(throughput.contains("fault: partition [1] [2 3]"));
        // Values and errors from the network are escaped.
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("error: timeout &lt;5 s&gt;"));
        assert!(html.contains("tok &amp; &quot;quoted&quot;"));
        // Lanes, outcomes, latency in the hover title, the unfinished read.
        for p in 0..4 {
            assert!(html.contains(&format!(">process {p}</text>")));
        }
        assert!(!html.contains(&format!("process {N}")));
        assert!(html.contains("write — fail"));
        assert!(html.contains("latency: 200 ms"));
        assert!(html.contains("read — never completed"));
        assert!(throughput.contains(">read</title>") && throughput.contains(">write</title>"));
    }

    #[test]
    fn the_timeline_draws_at_most_the_cap_and_says_so() {
        let mut v = Vec::new();
        for i in 0..30 {
            v.push((i % 3, Invoke, "read", json!(null), None));
            v.push((i % 3, Ok, "read", json!([i]), None));
        }
        let ops = h(&v);
        let dir = temp_dir("cap");
        write_report_capped(&dir, &ops, &json!({"valid": true}), 10).unwrap();
        let html = std::fs::read_to_string(dir.join("timeline.html")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(html.contains("Showing the first 10 of 30 operations"));
        assert!(html.contains("VALID") && !html.contains("INVALID"));
        let timeline = &html[html.find("<h2>Timeline").unwrap()..html.find("<h2>Latency").unwrap()];
        assert_eq!(timeline.matches("<rect").count(), 10 + 4, "bars and legend");
        assert!(html.contains("<td>read</td><td>30</td>"));
    }

    #[test]
    fn empty_and_unpaired_histories_still_make_a_report() {
        let dir = temp_dir("empty");
        write_report(&dir, &[], &json!({})).unwrap();
        for f in ["timeline.html", "latency.svg", "throughput.svg"] {
            let doc = std::fs::read_to_string(dir.join(f)).unwrap();
            balanced(&doc).unwrap();
            assert!(!doc.contains("NaN"), "{f}");
        }
        let orphan = h(&[(0, Ok, "read", json!(null), None)]);
        write_report(&dir, &orphan, &json!({"valid": true})).unwrap();
        let html = std::fs::read_to_string(dir.join("timeline.html")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(html.contains("could not be paired"));
        // A fault never healed runs to the end.
        let open = h(&[
            (N, Invoke, "nemesis", json!("kill 2"), None),
            (N, Info, "nemesis", json!("kill 2"), None),
            (0, Invoke, "read", json!(null), None),
            (0, Ok, "read", json!(null), None),
        ]);
        let dir = temp_dir("open");
        write_report(&dir, &open, &json!({"valid": true})).unwrap();
        let html = std::fs::read_to_string(dir.join("timeline.html")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(html.contains("<td>kill 2</td><td>0.1</td><td>the end</td>"));
    }
}
