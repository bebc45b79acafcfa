//! The live page (#24): `GET /` on the metrics port, one self-contained HTML
//! page (inline SVG, no script from elsewhere) for the people who watch the
//! service: the serving model, the live calibration plot (predicted against
//! realised success of the retries recoup decided, per tenth of p_success,
//! from the `recoup_live_*` counters), decisions by action and channel, and
//! the holdout arms with their 95 % intervals (`recoup report live` over the
//! decision log, recomputed at most every [`ARMS_EVERY`]). It refreshes
//! itself every 30 s. A small script marks each plot with its laid-out size
//! (`data-rendered-width`), which the browser test reads back.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::decision_log::LiveReport;

/// How long the page reuses the arms it computed from the decision log.
pub const ARMS_EVERY: Duration = Duration::from_secs(30);

/// The arms as the page shows them, or why they are missing.
pub type Arms = Result<std::sync::Arc<LiveReport>, String>;

/// One sample of the Prometheus text: its labels and value.
type Samples = Vec<(BTreeMap<String, String>, f64)>;

/// The samples of the Prometheus text exposition, by metric name.
fn parse(text: &str) -> BTreeMap<String, Samples> {
    let mut out: BTreeMap<String, Samples> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim_matches('"').to_string()))
            .collect();
        out.entry(name.to_string()).or_default().push((labels, value));
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Sum per value of `label` of metric `name`.
fn by(m: &BTreeMap<String, Samples>, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in m.get(name).map(Vec::as_slice).unwrap_or(&[]) {
        *out.entry(labels.get(label).cloned().unwrap_or_default()).or_insert(0.0) += v;
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:980px}h1{font-size:22px}\
h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;\
text-align:right}td:first-child,th:first-child{text-align:left}.note{color:#666}svg{background:#fafafa;border:1px solid #eee}";

/// The calibration plot: one dot per p_success tenth at (mean predicted, realised), area by count.
fn calibration_svg(m: &BTreeMap<String, Samples>) -> (String, usize) {
    let (n, s, p) = (
        by(m, "recoup_live_bin_outcomes_total", "bin"),
        by(m, "recoup_live_bin_succeeded_total", "bin"),
        by(m, "recoup_live_bin_predicted_total", "bin"),
    );
    let (w, pad) = (320.0, 36.0);
    let xy = |x: f64, y: f64| (pad + x * (w - 2.0 * pad), w - pad - y * (w - 2.0 * pad));
    let mut svg =
        format!(r#"<svg id="calibration" width="{w}" height="{w}" viewBox="0 0 {w} {w}" role="img" aria-label="live calibration">"#);
    let (x0, y0) = xy(0.0, 0.0);
    let (x1, y1) = xy(1.0, 1.0);
    let _ = write!(svg, r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999" stroke-dasharray="4 3"/>"##);
    let _ = write!(
        svg,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#444"/>"##
    );
    for t in [0.0, 0.5, 1.0] {
        let (x, y) = xy(t, t);
        let _ = write!(svg, r#"<text x="{x}" y="{}" font-size="10" text-anchor="middle">{t}</text>"#, y0 + 14.0);
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{t}</text>"#, x0 - 4.0, y + 3.0);
    }
    let _ = write!(svg, r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">predicted P(success)</text>"#, w / 2.0, w - 4.0);
    let _ = write!(
        svg,
        r#"<text x="10" y="{}" font-size="11" transform="rotate(-90 10 {})" text-anchor="middle">realised</text>"#,
        w / 2.0,
        w / 2.0
    );
    let total: f64 = n.values().sum();
    let mut dots = 0;
    for (bin, count) in n.iter().filter(|(_, c)| **c > 0.0) {
        let (px, py) = (p.get(bin).copied().unwrap_or(0.0) / count, s.get(bin).copied().unwrap_or(0.0) / count);
        let (x, y) = xy(px, py);
        let r = 3.0 + 9.0 * (count / total.max(1.0)).sqrt();
        let _ = write!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{r:.1}" fill="#2a6fdb" fill-opacity="0.7"><title>p {bin}: {count} retries, predicted {px:.3}, realised {py:.3}</title></circle>"##
        );
        dots += 1;
    }
    svg.push_str("</svg>");
    (svg, dots)
}

/// Decisions by action and channel: horizontal bars.
fn decisions_svg(rows: &[(String, f64)]) -> String {
    let max = rows.iter().map(|r| r.1).fold(1.0, f64::max);
    let h = 22.0 * rows.len() as f64 + 10.0;
    let mut svg = format!(r#"<svg id="decisions-chart" width="520" height="{h}" viewBox="0 0 520 {h}" role="img" aria-label="decisions">"#);
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 6.0 + 22.0 * i as f64;
        let len = 300.0 * v / max;
        let _ = write!(
            svg,
            r##"<text x="150" y="{}" font-size="11" text-anchor="end">{}</text><rect x="156" y="{y}" width="{len:.1}" height="16" fill="#3c9d5d"/><text x="{}" y="{}" font-size="11">{v}</text>"##,
            y + 12.0,
            esc(label),
            160.0 + len,
            y + 12.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The arms' recovery rates with their intervals.
fn arms_svg(r: &LiveReport) -> String {
    let h = 30.0 * r.arms.len() as f64 + 30.0;
    let x = |v: f64| 180.0 + 320.0 * v.clamp(0.0, 1.0);
    let mut svg =
        format!(r#"<svg id="arms-chart" width="520" height="{h}" viewBox="0 0 520 {h}" role="img" aria-label="recovery by arm">"#);
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            svg,
            r##"<line x1="{0}" y1="4" x2="{0}" y2="{1}" stroke="#e3e3e3"/><text x="{0}" y="{2}" font-size="10" text-anchor="middle">{3} %</text>"##,
            x(t),
            h - 18.0,
            h - 6.0,
            100.0 * t
        );
    }
    for (i, a) in r.arms.iter().enumerate() {
        let y = 16.0 + 30.0 * i as f64;
        let e = a.recovery_rate;
        let _ = write!(
            svg,
            r##"<text x="172" y="{}" font-size="11" text-anchor="end">{}</text><line x1="{:.1}" y1="{y}" x2="{:.1}" y2="{y}" stroke="#b5462f" stroke-width="2"/><circle cx="{:.1}" cy="{y}" r="4" fill="#b5462f"/>"##,
            y + 4.0,
            esc(&a.arm),
            x(e.lo),
            x(e.hi),
            x(e.value)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The page, from the server's metrics text and, when the server keeps a decision log, the arms
/// (`Err`: why they are not shown).
pub fn render(metrics_text: &str, arms: Result<&LiveReport, String>) -> String {
    let m = parse(metrics_text);
    let version = m.get("recoup_model_info").and_then(|s| s.iter().find(|(_, v)| *v > 0.0)).and_then(|(l, _)| l.get("version").cloned());
    let mut decisions: Vec<(String, f64)> = m
        .get("recoup_decisions_total")
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|(l, v)| {
            let channel = l.get("channel").map_or("", String::as_str);
            let channel = channel.strip_prefix("CHANNEL_").map_or(channel.to_string(), str::to_lowercase);
            (format!("{} · {channel}", l.get("action").map_or("", String::as_str)), *v)
        })
        .collect();
    decisions.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f64 = decisions.iter().map(|d| d.1).sum();
    let (cal_svg, dots) = calibration_svg(&m);
    let (n, s, p) = (
        by(&m, "recoup_live_outcomes_total", "class"),
        by(&m, "recoup_live_succeeded_total", "class"),
        by(&m, "recoup_live_predicted_total", "class"),
    );
    let judged: f64 = n.values().sum();

    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30"><title>recoup live</title><style>{STYLE}</style></head><body>"#
    );
    let _ = write!(
        h,
        r#"<h1>recoup — live</h1><p>Serving model <b id="model">{}</b> · <b id="decisions">{total}</b> decisions since start · <b id="judged">{judged}</b> retries judged against their outcome</p>"#,
        esc(version.as_deref().unwrap_or("none"))
    );
    h.push_str("<h2>Live calibration</h2><p class=\"note\">Each dot: the retries recoup decided whose reported outcome followed its answer, grouped by the P(success) it answered; on the dashed line predicted equals realised. Counters since this server started (Prometheus keeps the rolling window).</p>");
    h.push_str(&cal_svg);
    if dots == 0 {
        h.push_str("<p class=\"note\" id=\"calibration-empty\">No reported outcome of a decided retry yet (ReportAttempts).</p>");
    }
    h.push_str(r#"<table id="calibration-by-class"><tr><th>decline class</th><th>retries</th><th>predicted</th><th>realised</th></tr>"#);
    for (class, count) in n.iter().filter(|(_, c)| **c > 0.0) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{count}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(class),
            p.get(class).copied().unwrap_or(0.0) / count,
            s.get(class).copied().unwrap_or(0.0) / count
        );
    }
    h.push_str("</table><h2>Population drift</h2>");
    let psi = by(&m, "recoup_drift_psi", "feature");
    if psi.is_empty() {
        h.push_str("<p class=\"note\" id=\"drift-empty\">No PSI yet: no payment decided at its first decision, or the serving model has no training population (trained before it was recorded).</p>");
    } else {
        h.push_str("<p class=\"note\">Payments decided since start, at their first decision, against the serving model's training data: population stability index per key feature (below 0.1 stable, 0.1–0.25 moderate, above 0.25 major: retrain on recent history).</p><table id=\"drift\"><tr><th>feature</th><th>PSI</th><th>reading</th></tr>");
        for (feature, v) in &psi {
            let _ = write!(h, "<tr><td>{}</td><td>{v:.3}</td><td>{}</td></tr>", esc(feature), crate::drift::verdict(*v));
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Decisions by action and channel</h2>");
    h.push_str(&decisions_svg(&decisions));
    h.push_str("<h2>Holdout arms</h2>");
    match arms {
        Ok(r) if !r.arms.is_empty() => {
            let _ = write!(
                h,
                r#"<p class="note">Payments whose {}-day window closed by {} ({} still open); 95 % bootstrap intervals; money in minor units, mixed currencies.</p>"#,
                r.window_days,
                r.as_of.format("%Y-%m-%d %H:%M UTC"),
                r.open_payments
            );
            h.push_str(&arms_svg(r));
            h.push_str(r#"<table id="arms"><tr><th>arm</th><th>payments</th><th>recovered</th><th>net per payment</th></tr>"#);
            for a in &r.arms {
                let (e, n) = (a.recovery_rate, a.net_per_payment);
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{:.1} % [{:.1}, {:.1}]</td><td>{:.1} [{:.1}, {:.1}]</td></tr>",
                    esc(&a.arm),
                    a.payments,
                    100.0 * e.value,
                    100.0 * e.lo,
                    100.0 * e.hi,
                    n.value,
                    n.lo,
                    n.hi
                );
            }
            h.push_str("</table>");
            for (control, net, rate) in &r.model_minus_control {
                let _ = write!(
                    h,
                    "<p>model − {}: net per payment {:.1} [{:.1}, {:.1}], recovery {:+.1} points [{:+.1}, {:+.1}]</p>",
                    esc(control),
                    net.value,
                    net.lo,
                    net.hi,
                    100.0 * rate.value,
                    100.0 * rate.lo,
                    100.0 * rate.hi
                );
            }
        }
        Ok(_) => h.push_str("<p class=\"note\" id=\"arms-empty\">No payment's dunning window has closed yet.</p>"),
        Err(why) => {
            let _ = write!(h, "<p class=\"note\" id=\"arms-empty\">{}</p>", esc(&why));
        }
    }
    h.push_str(
        "<script>for(const s of document.querySelectorAll('svg')){const b=s.getBBox();s.dataset.renderedWidth=Math.round(b.width);s.dataset.renderedHeight=Math.round(b.height)}</script></body></html>",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_the_model_the_decisions_and_a_dot_per_judged_tenth() {
        let text = "# HELP x\nrecoup_model_info{version=\"20261202-x\"} 1\n\
            recoup_decisions_total{action=\"RETRY\",channel=\"CHANNEL_EMAIL\"} 7\n\
            recoup_decisions_total{action=\"DO_NOT_RETRY\",channel=\"none\"} 2\n\
            recoup_live_bin_outcomes_total{bin=\"0.6-0.7\"} 4\nrecoup_live_bin_succeeded_total{bin=\"0.6-0.7\"} 3\n\
            recoup_live_bin_predicted_total{bin=\"0.6-0.7\"} 2.6\nrecoup_live_outcomes_total{class=\"soft_funds\"} 4\n\
            recoup_live_succeeded_total{class=\"soft_funds\"} 3\nrecoup_live_predicted_total{class=\"soft_funds\"} 2.6\n";
        let page = render(text, Err("no decision log <here>".into()));
        assert!(page.contains(r#"<b id="model">20261202-x</b>"#), "{page}");
        assert!(page.contains(r#"<b id="decisions">9</b>"#));
        assert_eq!(page.matches("<circle").count(), 1);
        assert!(page.contains("predicted 0.650, realised 0.750"));
        assert!(page.contains("<td>soft_funds</td><td>4</td><td>0.650</td><td>0.750</td>"));
        assert!(page.contains("RETRY · email") && page.contains("no decision log &lt;here&gt;"));
        // Nothing yet: an empty page says so rather than drawing nothing.
        let empty = render("", Err("x".into()));
        assert!(empty.contains("calibration-empty") && empty.contains(r#"<b id="model">none</b>"#));
    }
}
