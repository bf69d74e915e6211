//! Charts of a run, each written as PNG and SVG (plotters; the PNG text uses the bundled
//! DejaVu Sans, so no system fonts are needed).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid; if it were not, text would be missing, not the chart.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws the body into `<stem>.png` and `<stem>.svg` and returns both paths.
macro_rules! render {
    ($stem:expr, $size:expr, |$area:ident| $body:block) => {{
        register_font();
        let png = $stem.with_extension("png");
        let svg = $stem.with_extension("svg");
        {
            let $area = BitMapBackend::new(&png, $size).into_drawing_area();
            $area.fill(&WHITE).map_err(|e| anyhow!("{}: {e}", png.display()))?;
            (|| -> Result<()> { $body })().map_err(|e| anyhow!("{}: {e}", png.display()))?;
            $area.present().map_err(|e| anyhow!("{}: {e}", png.display()))?;
        }
        {
            let $area = SVGBackend::new(&svg, $size).into_drawing_area();
            $area.fill(&WHITE).map_err(|e| anyhow!("{}: {e}", svg.display()))?;
            (|| -> Result<()> { $body })().map_err(|e| anyhow!("{}: {e}", svg.display()))?;
            $area.present().map_err(|e| anyhow!("{}: {e}", svg.display()))?;
        }
        Ok(vec![png, svg])
    }};
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// Lines `(x, y)` per named series.
pub fn lines(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<Vec<PathBuf>> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return Err(anyhow!("{}: nothing to plot", stem.display()));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    render!(stem, (800, 500), |area| {
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_error)?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(plot_error)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plot_error)?;
        Ok(())
    })
}

/// One labelled bar per value (negative values go below the axis).
pub fn bars(stem: &Path, title: &str, y_label: &str, labels: &[String], values: &[f64]) -> Result<Vec<PathBuf>> {
    if labels.is_empty() || labels.len() != values.len() {
        return Err(anyhow!(
            "{}: {} labels for {} values",
            stem.display(),
            labels.len(),
            values.len()
        ));
    }
    let low = values.iter().copied().fold(0.0, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    let pad = ((high - low) * 0.12).max(1e-3);
    let n = labels.len() as i32;
    // Segmented ranges include their end: 0..n-1 holds n segments.
    let width = (160 + 150 * n as u32).clamp(500, 2000);
    render!(stem, (width, 500), |area| {
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (0..n - 1).into_segmented(),
                (low - if low < 0.0 { pad } else { 0.0 })..(high + pad),
            )
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let i = i as i32;
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), v)],
                    Palette99::pick(i as usize).filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(plot_error)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(
                    format!("{v:.3}"),
                    (SegmentValue::CenterOf(i as i32), v.max(0.0) + pad * 0.5),
                    TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
                )
            }))
            .map_err(plot_error)?;
        Ok(())
    })
}

/// A confusion matrix: rows true classes, columns predictions, cells shaded by the row's
/// share and labelled with counts.
pub fn confusion(stem: &Path, title: &str, classes: &[String], matrix: &[Vec<usize>]) -> Result<Vec<PathBuf>> {
    let n = classes.len() as i32;
    if n == 0 || matrix.len() != classes.len() {
        return Err(anyhow!(
            "{}: confusion matrix of {} rows for {n} classes",
            stem.display(),
            matrix.len()
        ));
    }
    let side = (140 + 48 * n as u32).clamp(400, 1400);
    let name = |v: &SegmentValue<i32>, flip: bool| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            let index = if flip { n - 1 - *i } else { *i };
            classes.get(index as usize).cloned().unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    };
    render!(stem, (side, side), |area| {
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(classes.len())
            .y_labels(classes.len())
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_error)?;
        let centred = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        for (r, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            // Row 0 at the top.
            let y = n - 1 - r as i32;
            for (c, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let shade = RGBColor((255.0 - 200.0 * share) as u8, (255.0 - 120.0 * share) as u8, 255);
                let c = c as i32;
                chart
                    .draw_series([Rectangle::new(
                        [
                            (SegmentValue::Exact(c), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1)),
                        ],
                        shade.filled(),
                    )])
                    .map_err(plot_error)?;
                chart
                    .draw_series([Text::new(
                        count.to_string(),
                        (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)),
                        centred.clone(),
                    )])
                    .map_err(plot_error)?;
            }
        }
        Ok(())
    })
}
