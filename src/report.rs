//! `recoup backtest --report DIR`: a self-contained HTML report with SVG plots
//! (plotters, no fonts or browsers needed to draw them); and `recoup models residuals
//! --plot DIR`: a decline class's success by exact day, hour and spacing against the model.
//!
//! Edge side: turns backtest results into files. The plots:
//! - share recovered by days since the failed charge, per strategy;
//! - recovery by decline class, per strategy;
//! - recovery by days between the payer's last pay day and the failed charge.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::backtest::{Case, Lineup, Outcome1, Segment, Summary};

/// Everything the report shows.
pub struct Report<'a> {
    pub title: String,
    pub lineup: &'a Lineup,
    pub cases: &'a [Case],
    pub out: &'a [Vec<Outcome1>],
    pub summaries: &'a [Summary],
    pub segments: &'a [Segment],
    pub window_days: i64,
}

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

fn short(name: &str) -> &str {
    name.split(" (").next().unwrap_or(name)
}

type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// plotters could not draw a plot.
    #[error("drawing a plot: {0}")]
    Plot(String),
}

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>> for ReportError {
    fn from(e: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        ReportError::Plot(e.to_string())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

/// The plots' coordinates: f64 by f64.
type Plane = Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>;

/// A chart's legend box at `at`.
fn legend<'a, 'b: 'a>(chart: &mut ChartContext<'a, SVGBackend<'b>, Plane>, at: SeriesLabelPosition) -> Result<(), ReportError> {
    chart.configure_series_labels().position(at).background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    Ok(())
}

/// A line chart of named series; y is a share (0–1), shown in percent.
fn lines_svg(title: &str, x_desc: &str, x_max: f64, series: &Lines) -> Result<String, ReportError> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (820, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let y_max = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0f64, f64::max).max(0.05) * 1.08;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max.min(1.0))?;
        chart.configure_mesh().x_desc(x_desc).y_desc("recovered").y_label_formatter(&|v| format!("{:.0} %", v * 100.0)).draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = palette(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present()?;
    }
    Ok(s)
}

/// Grouped bars: one group per category, one bar per series; y a share.
fn bars_svg(title: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> Result<String, ReportError> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (820, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..n, 0f64..1.0f64)?;
        let cats = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories.len() * 2 + 1)
            .x_label_formatter(&move |v| {
                let i = v.floor() as usize;
                if (v - i as f64 - 0.5).abs() < 1e-6 {
                    cats.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("recovered")
            .y_label_formatter(&|v| format!("{:.0} %", v * 100.0))
            .draw()?;
        let k = series.len().max(1) as f64;
        let width = 0.8 / k;
        for (j, (name, values)) in series.iter().enumerate() {
            let color = palette(j);
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + j as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, *v)], color.filled())
                }))?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
    }
    Ok(s)
}

/// Share of payments recovered within d days, d = 0..=window, per strategy.
pub fn recovery_curves(lineup: &Lineup, out: &[Vec<Outcome1>], window_days: i64) -> Lines {
    lineup
        .names
        .iter()
        .zip(out)
        .map(|(name, o)| {
            let n = o.len().max(1) as f64;
            let mut days: Vec<f64> = o.iter().filter_map(|x| x.days_to_recovery).collect();
            days.sort_by(f64::total_cmp);
            let pts = (0..=window_days * 4)
                .map(|q| {
                    let d = q as f64 / 4.0;
                    (d, days.partition_point(|x| *x <= d) as f64 / n)
                })
                .collect();
            (short(name).to_string(), pts)
        })
        .collect()
}

/// Recovery rate by whole days between the payer's last (true) pay day and the
/// failed charge (0–30; the last bucket holds 30 and more), per strategy.
pub fn recovery_by_payday(lineup: &Lineup, cases: &[Case], out: &[Vec<Outcome1>]) -> Lines {
    let bucket: Vec<usize> = cases
        .iter()
        .map(|c| {
            let date = c.episode.failed_at.with_timezone(&c.payer.timezone).date_naive();
            let (prev, _) = crate::sim::world::pay_bracket(&c.payer, date);
            (date - prev).num_days().clamp(0, 30) as usize
        })
        .collect();
    lineup
        .names
        .iter()
        .zip(out)
        .map(|(name, o)| {
            let mut hit = [0.0f64; 31];
            let mut all = [0.0f64; 31];
            for (b, x) in bucket.iter().zip(o) {
                all[*b] += 1.0;
                hit[*b] += f64::from(u8::from(x.recovered));
            }
            let pts = (0..31).filter(|b| all[*b] >= 30.0).map(|b| (b as f64, hit[b] / all[b])).collect();
            (short(name).to_string(), pts)
        })
        .collect()
}

/// One residuals plot: a decline class's success by the exact values of a finer cut,
/// predicted (line) against observed (points with ±2 SE bars), the model's level edges
/// dashed. `None` when the class has fewer than two values of the cut.
fn residual_svg(class: &str, cut: &str, cells: &[&crate::residuals::Cell]) -> Result<Option<String>, ReportError> {
    if cells.len() < 2 {
        return Ok(None);
    }
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (820, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = cells.len();
        let y_max = cells.iter().map(|c| (c.observed + 2.0 * c.se).max(c.predicted)).fold(0.05f64, f64::max).min(1.0) * 1.08;
        let names: Vec<String> = cells.iter().map(|c| c.value.clone()).collect();
        let title = format!("{class}: success by {cut} (model levels dashed; bars ±2 SE)");
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..y_max.min(1.0))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(32))
            .x_label_formatter(&move |v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc(cut)
            .y_desc("retry succeeds")
            .y_label_formatter(&|v| format!("{:.0} %", v * 100.0))
            .draw()?;
        // The model's level edges: between neighbours of different levels.
        for k in 1..n {
            if cells[k].level != cells[k - 1].level {
                let x = k as f64 - 0.5;
                chart.draw_series(DashedLineSeries::new([(x, 0.0), (x, y_max.min(1.0))], 4, 4, BLACK.mix(0.4).stroke_width(1)))?;
            }
        }
        let (pred, obs) = (palette(0), palette(3));
        chart
            .draw_series(LineSeries::new(cells.iter().enumerate().map(|(i, c)| (i as f64, c.predicted)), pred.stroke_width(2)))?
            .label("predicted (the model)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], pred.stroke_width(2)));
        chart.draw_series(cells.iter().enumerate().map(|(i, c)| {
            let x = i as f64;
            PathElement::new(vec![(x, (c.observed - 2.0 * c.se).max(0.0)), (x, (c.observed + 2.0 * c.se).min(1.0))], obs.stroke_width(1))
        }))?;
        chart
            .draw_series(cells.iter().enumerate().map(|(i, c)| Circle::new((i as f64, c.observed), 3, obs.filled())))?
            .label("observed")
            .legend(move |(x, y)| Circle::new((x + 9, y), 3, obs.filled()));
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present()?;
    }
    Ok(Some(s))
}

/// `recoup models residuals --plot DIR`: per decline class and finer cut, the plot of
/// [`residual_svg`] as `DIR/<class>-<cut>.svg`, and `DIR/index.html` showing them all;
/// returns the HTML path.
pub fn write_residuals(dir: &Path, title: &str, r: &crate::residuals::Residuals) -> Result<std::path::PathBuf, ReportError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut html = format!("<!doctype html><meta charset=\"utf-8\"><title>{0}</title><h1>{0}</h1>\n", esc(title));
    let finer = crate::residuals::finer_cut_names();
    for class in &r.classes {
        let _ = writeln!(
            html,
            "<h2>{}: {} retries, {:.3} predicted, {:.3} observed</h2>",
            esc(&class.class),
            class.retries,
            class.predicted,
            class.observed
        );
        for &cut in &finer {
            let cells: Vec<&crate::residuals::Cell> = r.cells.iter().filter(|c| c.class == class.class && c.cut == cut).collect();
            if let Some(svg) = residual_svg(&class.class, cut, &cells)? {
                let name = format!("{}-{cut}.svg", class.class);
                let path = dir.join(&name);
                std::fs::write(&path, svg).map_err(io(&path))?;
                let _ = writeln!(html, "<p><img src=\"{name}\" alt=\"{} by {cut}\"></p>", esc(&class.class));
            }
        }
    }
    let path = dir.join("index.html");
    std::fs::write(&path, html).map_err(io(&path))?;
    Ok(path)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Write `dir/index.html` and the plots as `dir/*.svg`; returns the HTML path.
pub fn write(dir: &Path, r: &Report) -> Result<std::path::PathBuf, ReportError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let curves = lines_svg(
        "Share recovered by days since the failed charge",
        "days since the failed charge",
        r.window_days as f64,
        &recovery_curves(r.lineup, r.out, r.window_days),
    )?;
    let classes: Vec<&Segment> = r.segments.iter().filter(|s| s.by == crate::backtest::SegmentBy::DeclineClass).collect();
    let class_svg = if classes.is_empty() {
        None
    } else {
        let cats: Vec<String> = classes.iter().map(|s| s.value.clone()).collect();
        let series: Vec<(String, Vec<f64>)> = r
            .lineup
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (short(n).to_string(), classes.iter().map(|s| s.strategies[i].recovery_rate.value).collect()))
            .collect();
        Some(bars_svg("Recovered by decline class", &cats, &series)?)
    };
    let payday = lines_svg(
        "Recovered by days from the payer's last pay day to the failure",
        "days from the last pay day to the failed charge",
        30.0,
        &recovery_by_payday(r.lineup, r.cases, r.out),
    )?;
    let mut plots = vec![("recovery_curve.svg", curves)];
    if let Some(c) = class_svg {
        plots.push(("recovery_by_decline_class.svg", c));
    }
    plots.push(("recovery_by_pay_day.svg", payday));
    for (name, svg) in &plots {
        std::fs::write(dir.join(name), svg).map_err(io(&dir.join(name)))?;
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}table{{border-collapse:collapse;font-size:13px}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}.ci{{color:#888}}</style></head><body><h1>{t}</h1>",
        t = esc(&r.title)
    );
    h.push_str("<p>Every strategy dunns the same failed payments with the same random numbers; every retry goes through the network rules first. Intervals: paired bootstrap over payments, 95 %. Money: minor units per payment, summed across currencies; net = recovered − attempt, message and penalty costs. Oracle uplift = (strategy − best fixed schedule) / (oracle − best fixed schedule), on net revenue.</p>");
    h.push_str("<table><tr><th>strategy</th><th>recovered</th><th>net per payment</th><th>days to recovery (median)</th><th>attempts</th><th>messages</th><th>cancelled</th><th>rule violations</th><th>oracle uplift</th></tr>");
    for s in r.summaries {
        let ci = |e: &crate::backtest::Estimate, pct: bool| {
            let f = |v: f64| if pct { format!("{:.1} %", 100.0 * v) } else { format!("{:.1}", v + 0.0) };
            format!("{} <span class=ci>[{}, {}]</span>", f(e.value), f(e.lo), f(e.hi))
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.strategy),
            ci(&s.recovery_rate, true),
            ci(&s.net_per_payment, false),
            s.median_days_to_recovery.map_or("–".into(), |d| format!("{d:.1}")),
            s.attempts_per_payment,
            s.messages_per_payment,
            ci(&s.cancellation_rate, true),
            s.rule_violations,
            s.oracle_uplift_share.as_ref().map_or("–".into(), |e| format!(
                "{:.0} % <span class=ci>[{:.0}, {:.0}]</span>",
                100.0 * e.value,
                100.0 * e.lo,
                100.0 * e.hi
            )),
        );
    }
    h.push_str("</table>");
    for (name, svg) in &plots {
        let _ = write!(h, "<h2>{}</h2>{}", esc(&name.trim_end_matches(".svg").replace('_', " ")), svg.trim_start_matches(|c| c != '<'));
    }
    let mut by = r.segments.iter().map(|s| s.by).collect::<Vec<_>>();
    by.dedup();
    for b in by {
        let _ = write!(h, "<h2>by {}</h2><table><tr><th>{}</th><th>payments</th>", b.as_str(), b.as_str());
        for n in &r.lineup.names {
            let _ = write!(h, "<th>{}</th>", esc(short(n)));
        }
        h.push_str("</tr>");
        for seg in r.segments.iter().filter(|s| s.by == b) {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td>", esc(&seg.value), seg.payments);
            for s in &seg.strategies {
                let _ = write!(
                    h,
                    "<td>{:.1} % <span class=ci>/ {:.0}</span></td>",
                    100.0 * s.recovery_rate.value,
                    s.net_per_payment.value + 0.0
                );
            }
            h.push_str("</tr>");
        }
        h.push_str("</table><p class=ci>recovered / net per payment</p>");
    }
    h.push_str("</body></html>\n");
    let path = dir.join("index.html");
    std::fs::write(&path, h).map_err(io(&path))?;
    Ok(path)
}
