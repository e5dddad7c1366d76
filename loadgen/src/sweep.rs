//! `gyro-loadgen sweep`: the latency curve. Runs the open loop at a series of offered
//! rates, one step after the other, and records p50, p99 and p99.9 (and the
//! generator's own schedule lag) at each; rates may be given as shares of the
//! closed-loop maximum, measured first. With a second target (a `gyro-loadgen sink`)
//! the same absolute rates run against it too, so that the server's curve can be read
//! against the loopback and the generator's own.

use std::net::SocketAddr;
use std::time::Duration;

use plotters::prelude::*;

use crate::run::{run, RunReport, RunSpec};

/// One step's offered rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// CCR/s.
    PerSecond(f64),
    /// A share (0 to 1) of the closed-loop maximum.
    OfMax(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `50000` (CCR/s) or `25%` (of the closed-loop maximum).
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?}: a rate is CCR/s (50000) or a share of the maximum (25%)");
        let r = match s.strip_suffix('%') {
            Some(p) => Rate::OfMax(p.trim().parse::<f64>().map_err(|_| bad())? / 100.0),
            None => Rate::PerSecond(s.trim().parse::<f64>().map_err(|_| bad())?),
        };
        match r {
            Rate::PerSecond(v) | Rate::OfMax(v) if v.is_finite() && v > 0.0 => Ok(r),
            _ => Err(bad()),
        }
    }
}

/// One step of a curve.
#[derive(Clone, Debug)]
pub struct Point {
    /// The offered rate (CCR/s).
    pub offered: f64,
    /// What was answered per second.
    pub ccr_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub lag_p99_us: u64,
    pub lag_max_us: u64,
    pub held_by_window: u64,
    pub check_failures: u64,
    pub timeouts: u64,
    pub connection_errors: usize,
}

impl Point {
    fn of(offered: f64, r: &RunReport) -> Point {
        let h = &r.latency;
        Point {
            offered,
            ccr_per_s: r.ccr_per_s(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            lag_p99_us: r.schedule_lag.value_at_quantile(0.99),
            lag_max_us: r.schedule_lag.max(),
            held_by_window: r.held_by_window,
            check_failures: r.check_failures,
            timeouts: r.timeouts,
            connection_errors: r.connection_errors.len(),
        }
    }

    /// No check failure, timeout or connection error.
    pub fn clean(&self) -> bool {
        self.check_failures == 0 && self.timeouts == 0 && self.connection_errors == 0
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "offered": self.offered,
            "ccr_per_s": self.ccr_per_s,
            "latency_us": {"p50": self.p50_us, "p99": self.p99_us, "p999": self.p999_us, "max": self.max_us},
            "schedule_lag_us": {"p99": self.lag_p99_us, "max": self.lag_max_us, "held_by_window": self.held_by_window},
            "check_failures": self.check_failures,
            "timeouts": self.timeouts,
            "connection_errors": self.connection_errors,
        })
    }
}

/// The steps against one target.
#[derive(Clone, Debug)]
pub struct Curve {
    pub target: SocketAddr,
    /// The closed-loop maximum, when a step was given as a share of it.
    pub max_ccr_per_s: Option<f64>,
    pub points: Vec<Point>,
}

impl Curve {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.target.to_string(),
            "max_ccr_per_s": self.max_ccr_per_s,
            "points": self.points.iter().map(Point::json).collect::<Vec<_>>(),
        })
    }
}

/// Runs `rates` in order against `spec.target`, each for `step`; `on_step` sees each
/// point as it is measured. A share of the maximum needs a closed-loop step first.
pub fn sweep(
    spec: &RunSpec,
    rates: &[Rate],
    step: Duration,
    mut on_step: impl FnMut(&Point),
) -> Curve {
    let mut max = None;
    if rates.iter().any(|r| matches!(r, Rate::OfMax(_))) {
        let closed = RunSpec {
            rate: None,
            duration: Some(step),
            sessions: None,
            ..spec.clone()
        };
        max = Some(run(&closed).ccr_per_s());
    }
    let offered: Vec<f64> = rates
        .iter()
        .map(|r| match *r {
            Rate::PerSecond(v) => v,
            Rate::OfMax(share) => share * max.unwrap_or(0.0),
        })
        .collect();
    let mut curve = at_rates(spec, &offered, step, &mut on_step);
    curve.max_ccr_per_s = max;
    curve
}

/// Runs the absolute rates `offered` in order against `spec.target`.
pub fn at_rates(
    spec: &RunSpec,
    offered: &[f64],
    step: Duration,
    mut on_step: impl FnMut(&Point),
) -> Curve {
    let mut points = Vec::with_capacity(offered.len());
    for &rate in offered {
        let s = RunSpec {
            rate: Some(rate.max(1.0)),
            duration: Some(step),
            sessions: None,
            ..spec.clone()
        };
        let p = Point::of(rate, &run(&s));
        on_step(&p);
        points.push(p);
    }
    Curve {
        target: spec.target,
        max_ccr_per_s: None,
        points,
    }
}

/// Draws p50, p99 and p99.9 against the offered rate for each curve (the first solid,
/// the others dashed), with the first curve's schedule lag p99, into an SVG file.
pub fn svg(curves: &[(&str, &Curve)], title: &str, path: &std::path::Path) -> Result<(), String> {
    draw(curves, title, path).map_err(|e| e.to_string())
}

fn draw(
    curves: &[(&str, &Curve)],
    title: &str,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || curves.iter().flat_map(|(_, c)| c.points.iter());
    let right = all().map(|p| p.offered).fold(1.0f64, f64::max) * 1.05;
    let top = all()
        .map(|p| p.p999_us.max(p.lag_p99_us))
        .fold(10u64, u64::max) as f64
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..right, (1f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered rate (CCR/s)")
        .y_desc("latency (us, log scale)")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .draw()?;
    type Line = (&'static str, fn(&Point) -> u64, RGBColor);
    let lines: [Line; 3] = [
        ("p50", |p| p.p50_us, BLUE),
        ("p99", |p| p.p99_us, RED),
        ("p99.9", |p| p.p999_us, BLACK),
    ];
    for (k, (name, curve)) in curves.iter().enumerate() {
        for (q, value, color) in lines {
            let pts: Vec<(f64, f64)> = curve
                .points
                .iter()
                .map(|p| (p.offered, value(p).max(1) as f64))
                .collect();
            let label = format!("{name} {q}");
            let style = color.stroke_width(if k == 0 { 2 } else { 1 });
            let series = if k == 0 {
                chart.draw_series(LineSeries::new(pts.clone(), style))?
            } else {
                chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))?
            };
            series
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
        if k == 0 {
            let lag: Vec<(f64, f64)> = curve
                .points
                .iter()
                .map(|p| (p.offered, p.lag_p99_us.max(1) as f64))
                .collect();
            let green = RGBColor(0, 150, 0);
            chart
                .draw_series(LineSeries::new(lag, green.stroke_width(2)))?
                .label(format!("{name} schedule lag p99"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green));
        }
    }
    crate::plot::legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}
