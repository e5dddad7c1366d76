//! `--plot FILE.svg`: latency over the run (p50, p99 and max of each second) above the
//! percentile curve of the whole run (latency against "nines": 90%, 99%, 99.9%...). In
//! an open loop both also show the generator's schedule lag (how late requests left),
//! the error the generator itself puts into the latency.

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::run::RunReport;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Draws the report into an SVG file.
pub fn svg(report: &RunReport, title: &str, path: &std::path::Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(450);
    over_time(&top, report, title).map_err(|e| e.to_string())?;
    let lag = (!report.schedule_lag.is_empty()).then_some(&report.schedule_lag);
    percentiles(&bottom, &report.latency, lag).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn over_time(
    area: &Area<'_>,
    report: &RunReport,
    title: &str,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let secs = report.per_second.len().max(1) as f64;
    let top = report
        .per_second
        .iter()
        .map(|h| ms(h.max()))
        .fold(0.1f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..secs, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("latency (ms)")
        .draw()?;
    let series = |q: Option<f64>| {
        report
            .per_second
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(move |(i, h)| {
                let v = match q {
                    Some(q) => h.value_at_quantile(q),
                    None => h.max(),
                };
                (i as f64 + 0.5, ms(v))
            })
            .collect::<Vec<_>>()
    };
    for (label, q, color) in [
        ("p50", Some(0.5), BLUE),
        ("p99", Some(0.99), RED),
        ("max", None, BLACK),
    ] {
        chart
            .draw_series(LineSeries::new(series(q), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if !report.lag_per_second.is_empty() {
        let lag: Vec<(f64, f64)> = report
            .lag_per_second
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| (i as f64 + 0.5, ms(h.value_at_quantile(0.99))))
            .collect();
        chart
            .draw_series(LineSeries::new(lag, LAG.stroke_width(2)))?
            .label("schedule lag p99")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LAG));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The schedule lag's colour.
const LAG: RGBColor = RGBColor(0, 150, 0);

/// Latency against "nines": 0 is the median's neighbourhood (0%), 1 is 90%, 2 is 99%,
/// 3 is 99.9%...
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut q = 0.0f64;
    while q < 0.999_999 {
        let nines = -(1.0 - q).log10();
        points.push((nines, ms(h.value_at_quantile(q))));
        q += (1.0 - q) / 20.0;
    }
    points
}

fn percentiles(
    area: &Area<'_>,
    h: &Histogram<u64>,
    lag: Option<&Histogram<u64>>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let points = curve(h);
    let lag = lag.map(curve);
    let top = points
        .iter()
        .chain(lag.iter().flatten())
        .map(|p| p.1)
        .fold(0.1f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile (whole run)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..6f64, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("percentile (1 = 90%, 2 = 99%, 3 = 99.9%, 4 = 99.99%)")
        .y_desc("latency (ms)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(points, RED.stroke_width(2)))?
        .label("latency")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    if let Some(lag) = lag {
        chart
            .draw_series(LineSeries::new(lag, LAG.stroke_width(2)))?
            .label("schedule lag")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LAG));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// The series' labels in a framed box at `at` (every chart gyro-loadgen draws).
pub(crate) fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    at: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}
