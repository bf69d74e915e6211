//! Charts of a run, each written as PNG and SVG (plotters; the PNG text uses the bundled
//! DejaVu Sans, so no system fonts are needed). Every canvas is sized from its text,
//! measured in that font: titles, category labels and legends stay inside the canvas and
//! apart, however long the class and modality names (tested on the SVG output).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

pub(crate) static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const TITLE_SIZE: u32 = 22;
const SMALLEST_TITLE: u32 = 12;
const LABEL_SIZE: u32 = 14;
const MARGIN: u32 = 15;
/// Widest canvas; a title longer than this at the smallest size is cut with an ellipsis.
const MAX_WIDTH: u32 = 2400;

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid; if it were not, text would be missing, not the chart.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Width of `text` in pixels at `size`, in the bundled font.
fn text_width(text: &str, size: u32) -> u32 {
    register_font();
    ("sans-serif", size)
        .into_font()
        .box_size(text)
        .map_or(size * text.chars().count() as u32, |(w, _)| w)
}

/// A title that fits `width`: the largest size from 22 down to 12 pixels, and the canvas
/// width it needs (wider than `width` only when even 12 pixels do not fit).
fn fit_title(title: &str, width: u32) -> (String, u32, u32) {
    let room = |w: u32| w.saturating_sub(2 * MARGIN);
    if let Some(size) = (SMALLEST_TITLE..=TITLE_SIZE)
        .rev()
        .find(|&s| text_width(title, s) <= room(width))
    {
        return (title.to_string(), size, width);
    }
    let needed = text_width(title, SMALLEST_TITLE) + 2 * MARGIN;
    if needed <= MAX_WIDTH {
        return (title.to_string(), SMALLEST_TITLE, needed.max(width));
    }
    let mut cut: String = title.to_string();
    while text_width(&format!("{cut}…"), SMALLEST_TITLE) > room(MAX_WIDTH) && cut.pop().is_some() {}
    (format!("{cut}…"), SMALLEST_TITLE, MAX_WIDTH)
}

/// Draws the body into `<stem>.png` and `<stem>.svg` and returns both paths.
macro_rules! render {
    ($stem:expr, $size:expr, |$area:ident| $body:block) => {{
        register_font();
        let png = $stem.with_extension("png");
        let svg = $stem.with_extension("svg");
        {
            let $area = crate::glyphs::SetText::new(BitMapBackend::new(&png, $size), FONT)
                .map_err(|e| anyhow!("the bundled font: {e}"))?
                .into_drawing_area();
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

fn label_style(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(h, v))
}

/// The title centred at the top; returns the area below it.
fn titled<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, size: u32) -> Result<DrawingArea<DB, Shift>> {
    let (width, _) = area.dim_in_pixel();
    area.draw(&Text::new(
        title.to_string(),
        (width as i32 / 2, MARGIN as i32),
        label_style(size, HPos::Center, VPos::Top),
    ))
    .map_err(plot_error)?;
    let (_, below) = area.split_vertically(MARGIN + size + 10);
    Ok(below)
}

/// One panel of a line chart: its y axis and its series.
pub struct Panel {
    /// The y axis description.
    pub y_label: String,
    /// Named series of `(x, y)` points.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

const PANEL_HEIGHT: u32 = 320;
const LEGEND_ROW: u32 = 24;
const LEGEND_SWATCH: u32 = 26;

/// Line charts stacked vertically (one per panel, sharing the x axis's meaning), each with
/// its legend beside it rather than over its curves.
pub fn lines(stem: &Path, title: &str, x_label: &str, panels: &[Panel]) -> Result<Vec<PathBuf>> {
    let panels: Vec<&Panel> = panels
        .iter()
        .filter(|p| p.series.iter().any(|(_, points)| !points.is_empty()))
        .collect();
    if panels.is_empty() {
        return Err(anyhow!("{}: nothing to plot", stem.display()));
    }
    let legend_width = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .map(|(name, _)| text_width(name, LABEL_SIZE))
        .max()
        .unwrap_or(0)
        + LEGEND_SWATCH
        + 2 * MARGIN;
    let (title, title_size, width) = fit_title(title, 760 + legend_width);
    let rows = panels.iter().map(|p| p.series.len() as u32).max().unwrap_or(1);
    let panel_height = PANEL_HEIGHT.max(rows * LEGEND_ROW + 2 * MARGIN);
    let height = MARGIN + title_size + 10 + panel_height * panels.len() as u32;
    let x_range = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|(_, points)| points.iter().map(|p| p.0)))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (x0, x1) = (
        x_range.0,
        if x_range.1 > x_range.0 {
            x_range.1
        } else {
            x_range.0 + 1.0
        },
    );
    // Epochs and other counts: ticks on whole numbers only, written without decimals.
    let whole = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|(_, points)| points.iter()))
        .all(|p| p.0.fract() == 0.0);
    render!(stem, (width, height), |area| {
        let mut rest = titled(&area, &title, title_size)?;
        for (index, panel) in panels.iter().enumerate() {
            let (this, below) = rest.split_vertically(panel_height);
            rest = below;
            let (plot, legend) = this.split_horizontally(width - legend_width);
            draw_panel(&plot, panel, (x0, x1, whole), x_label, index * 10)?;
            for (i, (name, _)) in panel.series.iter().enumerate() {
                let color = Palette99::pick(index * 10 + i).to_rgba();
                let y = (2 * MARGIN + i as u32 * LEGEND_ROW) as i32;
                let x = MARGIN as i32;
                legend
                    .draw(&PathElement::new(
                        vec![(x, y), (x + LEGEND_SWATCH as i32 - 6, y)],
                        color.stroke_width(3),
                    ))
                    .map_err(plot_error)?;
                legend
                    .draw(&Text::new(
                        name.clone(),
                        (x + LEGEND_SWATCH as i32, y),
                        label_style(LABEL_SIZE, HPos::Left, VPos::Center),
                    ))
                    .map_err(plot_error)?;
            }
        }
        Ok(())
    })
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    (x0, x1, whole): (f64, f64, bool),
    x_label: &str,
    colour_offset: usize,
) -> Result<()> {
    let ys = panel.series.iter().flat_map(|(_, points)| points.iter().map(|p| p.1));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .margin(MARGIN)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(plot_error)?;
    let whole_number = |x: &f64| format!("{x:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_label)
        .y_desc(panel.y_label.as_str())
        .label_style(("sans-serif", LABEL_SIZE));
    if whole {
        // No more ticks than whole numbers in the range, so every tick falls on one.
        mesh.x_labels(((x1 - x0) as usize + 1).min(10))
            .x_label_formatter(&whole_number);
    }
    mesh.draw().map_err(plot_error)?;
    for (i, (_, points)) in panel.series.iter().enumerate() {
        let color = Palette99::pick(colour_offset + i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(plot_error)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    Ok(())
}

const BAR_ROW: u32 = 34;

/// One horizontal bar per labelled value (negative values go left of zero), labels on the
/// left, as wide as the longest needs.
pub fn bars(stem: &Path, title: &str, value_label: &str, labels: &[String], values: &[f64]) -> Result<Vec<PathBuf>> {
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
    // Room right of the longest bar for its value.
    let pad = ((high - low) * 0.18).max(1e-3);
    let n = labels.len() as i32;
    let label_width = labels.iter().map(|l| text_width(l, LABEL_SIZE)).max().unwrap_or(0) + 20;
    let (title, title_size, width) = fit_title(title, (label_width + 560).max(640));
    let height = MARGIN + title_size + 10 + 2 * MARGIN + 55 + BAR_ROW * n as u32;
    render!(stem, (width, height), |area| {
        let below = titled(&area, &title, title_size)?;
        let mut chart = ChartBuilder::on(&below)
            .margin(MARGIN)
            .x_label_area_size(55)
            .y_label_area_size(label_width)
            .build_cartesian_2d(
                (low - if low < 0.0 { pad } else { 0.0 })..(high + pad),
                (0..n - 1).into_segmented(),
            )
            .map_err(plot_error)?;
        // The first label on top.
        let row = |i: usize| n - 1 - i as i32;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(labels.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get((n - 1 - *i) as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .x_desc(value_label)
            .label_style(("sans-serif", LABEL_SIZE))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let mut bar = Rectangle::new(
                    [(0.0, SegmentValue::Exact(row(i))), (v, SegmentValue::Exact(row(i) + 1))],
                    Palette99::pick(i).filled(),
                );
                bar.set_margin(6, 6, 0, 0);
                bar
            }))
            .map_err(plot_error)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(
                    format!(" {v:.3}"),
                    (v.max(0.0), SegmentValue::CenterOf(row(i))),
                    label_style(LABEL_SIZE, HPos::Left, VPos::Center),
                )
            }))
            .map_err(plot_error)?;
        Ok(())
    })
}

const CELL: u32 = 48;
const CLASS_LABEL_SIZE: u32 = 13;

/// A confusion matrix: rows true classes, columns predictions, cells shaded by the row's
/// share and labelled with counts. Column names run downwards under their column, so long
/// names never run into each other.
pub fn confusion(stem: &Path, title: &str, classes: &[String], matrix: &[Vec<usize>]) -> Result<Vec<PathBuf>> {
    let n = classes.len();
    if n == 0 || matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
        return Err(anyhow!(
            "{}: confusion matrix of {} rows for {n} classes",
            stem.display(),
            matrix.len()
        ));
    }
    let cells: Vec<Vec<(f64, String)>> = matrix
        .iter()
        .map(|row| {
            let total = row.iter().sum::<usize>().max(1) as f64;
            row.iter()
                .map(|&count| (count as f64 / total, count.to_string()))
                .collect()
        })
        .collect();
    grid(stem, title, (classes, classes), &cells, ("true ↓", "predicted →"))
}

/// A similarity matrix of `rows` against `columns` (cosines), cells shaded from −1 (white)
/// to 1 and labelled with two decimals.
pub fn similarity(
    stem: &Path,
    title: &str,
    (rows, columns): (&[String], &[String]),
    matrix: &[Vec<f32>],
    (row_axis, column_axis): (&str, &str),
) -> Result<Vec<PathBuf>> {
    if rows.is_empty() || matrix.len() != rows.len() || matrix.iter().any(|r| r.len() != columns.len()) {
        return Err(anyhow!(
            "{}: similarity matrix of {} rows for {} × {} records",
            stem.display(),
            matrix.len(),
            rows.len(),
            columns.len()
        ));
    }
    let cells: Vec<Vec<(f64, String)>> = matrix
        .iter()
        .map(|row| {
            row.iter()
                .map(|&v| ((f64::from(v) + 1.0) / 2.0, format!("{v:.2}")))
                .collect()
        })
        .collect();
    grid(stem, title, (rows, columns), &cells, (row_axis, column_axis))
}

/// A grid of cells, each shaded by its share in `[0, 1]` and labelled with its text; row
/// names beside it, column names running downwards under their column.
fn grid(
    stem: &Path,
    title: &str,
    (rows, columns): (&[String], &[String]),
    cells: &[Vec<(f64, String)>],
    (row_axis, column_axis): (&str, &str),
) -> Result<Vec<PathBuf>> {
    let (n_rows, n_columns) = (rows.len() as i32, columns.len() as i32);
    let longest = |names: &[String]| names.iter().map(|c| text_width(c, CLASS_LABEL_SIZE)).max().unwrap_or(0);
    let (y_area, x_area) = (longest(rows) + 50, longest(columns) + 50);
    let (grid_width, grid_height) = (CELL * n_columns as u32, CELL * n_rows as u32);
    let (title, title_size, width) = fit_title(title, (y_area + grid_width + 3 * MARGIN).max(420));
    let height = MARGIN + title_size + 10 + 2 * MARGIN + grid_height + x_area;
    render!(stem, (width, height), |area| {
        let below = titled(&area, &title, title_size)?;
        // The grid's own area: the names are drawn beside it, in pixels.
        let (_, right) = below.split_horizontally(y_area);
        let (grid_area, _) = right.margin(MARGIN, 0, 0, 0).split_vertically(grid_height);
        let (grid_area, _) = grid_area.split_horizontally(grid_width);
        let mut chart = ChartBuilder::on(&grid_area)
            .build_cartesian_2d((0..n_columns - 1).into_segmented(), (0..n_rows - 1).into_segmented())
            .map_err(plot_error)?;
        let centred = label_style(CLASS_LABEL_SIZE, HPos::Center, VPos::Center);
        for (r, row) in cells.iter().enumerate() {
            // Row 0 at the top.
            let y = n_rows - 1 - r as i32;
            for (c, (share, text)) in row.iter().enumerate() {
                let share = share.clamp(0.0, 1.0);
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
                        text.clone(),
                        (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)),
                        centred.clone(),
                    )])
                    .map_err(plot_error)?;
            }
        }
        let (grid_x, grid_y) = (
            grid_area.get_base_pixel().0 - area.get_base_pixel().0,
            grid_area.get_base_pixel().1 - area.get_base_pixel().1,
        );
        let (cell, grid_width, grid_height) = (CELL as i32, grid_width as i32, grid_height as i32);
        let down = TextStyle::from(
            ("sans-serif", CLASS_LABEL_SIZE)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .pos(Pos::new(HPos::Left, VPos::Center));
        for (i, name) in rows.iter().enumerate() {
            area.draw(&Text::new(
                name.clone(),
                (grid_x - 8, grid_y + i as i32 * cell + cell / 2),
                label_style(CLASS_LABEL_SIZE, HPos::Right, VPos::Center),
            ))
            .map_err(plot_error)?;
        }
        for (i, name) in columns.iter().enumerate() {
            area.draw(&Text::new(
                name.clone(),
                (grid_x + i as i32 * cell + cell / 2, grid_y + grid_height + 8),
                down.clone(),
            ))
            .map_err(plot_error)?;
        }
        let axis = label_style(LABEL_SIZE, HPos::Center, VPos::Bottom);
        area.draw(&Text::new(
            column_axis.to_string(),
            (grid_x + grid_width / 2, (height - 4) as i32),
            axis.clone(),
        ))
        .map_err(plot_error)?;
        area.draw(&Text::new(
            row_axis.to_string(),
            (grid_x - 8, grid_y - 4),
            label_style(LABEL_SIZE, HPos::Right, VPos::Bottom),
        ))
        .map_err(plot_error)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text element of an SVG: its box in canvas pixels.
    #[derive(Debug)]
    struct Placed {
        text: String,
        left: f64,
        top: f64,
        right: f64,
        bottom: f64,
    }

    fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        tag[start..].split('"').next()
    }

    /// The canvas size and every text's box, measured in the bundled font as the PNG is
    /// drawn (the SVG's `font-size` is plotters' size divided by 1.24).
    fn texts(svg: &str) -> ((f64, f64), Vec<Placed>) {
        let number = |tag: &str, name: &str| attribute(tag, name).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let head = svg.split('>').next().unwrap_or_default();
        let canvas = (number(head, "width"), number(head, "height"));
        let mut placed = Vec::new();
        for piece in svg.split("<text").skip(1) {
            let (tag, rest) = piece.split_once('>').unwrap_or_default();
            let text = rest.split("</text>").next().unwrap_or_default().trim().to_string();
            let (x, y) = (number(tag, "x"), number(tag, "y"));
            let size = (number(tag, "font-size") * 1.24).round() as u32;
            let (w, h) = (f64::from(text_width(&text, size)), f64::from(size));
            let left = match attribute(tag, "text-anchor") {
                Some("middle") => -w / 2.0,
                Some("end") => -w,
                _ => 0.0,
            };
            let top = match attribute(tag, "dy") {
                Some("0.76em") => 0.0,
                Some("-0.5ex") => -h,
                _ => -h / 2.0,
            };
            // Corners relative to the anchor, turned as the transform turns them.
            let turn = attribute(tag, "transform").map_or(0, |t| {
                t.trim_start_matches("rotate(")
                    .split(',')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0)
            });
            let corners = [(left, top), (left + w, top + h)].map(|(dx, dy)| match turn {
                90 => (-dy, dx),
                180 => (-dx, -dy),
                270 => (dy, -dx),
                _ => (dx, dy),
            });
            placed.push(Placed {
                text,
                left: x + corners[0].0.min(corners[1].0),
                right: x + corners[0].0.max(corners[1].0),
                top: y + corners[0].1.min(corners[1].1),
                bottom: y + corners[0].1.max(corners[1].1),
            });
        }
        (canvas, placed)
    }

    /// Every text inside the canvas and no two texts overlapping (1 px of slack for
    /// rounding).
    fn assert_readable(svg_path: &Path) {
        let svg = std::fs::read_to_string(svg_path).unwrap_or_default();
        let ((width, height), placed) = texts(&svg);
        assert!(!placed.is_empty(), "{}: no text", svg_path.display());
        for p in &placed {
            assert!(
                p.left >= -1.0 && p.top >= -1.0 && p.right <= width + 1.0 && p.bottom <= height + 1.0,
                "{}: `{}` at {:?} leaves the {width}×{height} canvas",
                svg_path.display(),
                p.text,
                (p.left, p.top, p.right, p.bottom)
            );
        }
        for (i, a) in placed.iter().enumerate() {
            for b in &placed[i + 1..] {
                let apart = a.right <= b.left + 1.0
                    || b.right <= a.left + 1.0
                    || a.bottom <= b.top + 1.0
                    || b.bottom <= a.top + 1.0;
                assert!(apart, "{}: `{}` overlaps `{}`", svg_path.display(), a.text, b.text);
            }
        }
    }

    fn long_names() -> Vec<String> {
        [
            "a cat sitting on a very long windowsill",
            "dog",
            "an extraordinarily verbose class name",
            "b",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn long_titles_labels_and_names_stay_inside_and_apart() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let modalities = ["image", "audio", "video", "text with a long modality name"];
        let subsets: Vec<String> = (1..16u32)
            .map(|mask| {
                modalities
                    .iter()
                    .enumerate()
                    .filter(|(m, _)| mask & (1 << m) != 0)
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        let values: Vec<f64> = (0..15).map(|i| f64::from(i) / 15.0 - 0.2).collect();
        let files = bars(
            &dir.path().join("subsets"),
            "Modality contributions (mean |Shapley value| of the true class's probability, over the records that have the modality)",
            "accuracy",
            &subsets,
            &values,
        )?;
        assert_readable(&files[1]);

        let classes = long_names();
        let matrix: Vec<Vec<usize>> = (0..4).map(|r| (0..4).map(|c| 100 * r + c).collect()).collect();
        let files = confusion(
            &dir.path().join("confusion"),
            "Confusion on test (accuracy 0.4312)",
            &classes,
            &matrix,
        )?;
        assert_readable(&files[1]);

        let curve = |shift: f64| {
            (0..6)
                .map(|i| (f64::from(i) * 0.2, 0.9 - shift - f64::from(i) * 0.1))
                .collect()
        };
        let series: Vec<(String, Vec<(f64, f64)>)> = modalities
            .iter()
            .enumerate()
            .map(|(i, m)| (m.to_string(), curve(i as f64 * 0.01)))
            .collect();
        let files = lines(
            &dir.path().join("noise"),
            "Accuracy as noise grows on one modality",
            "noise std / feature std",
            &[Panel {
                y_label: "accuracy".into(),
                series,
            }],
        )?;
        assert_readable(&files[1]);
        let files = lines(
            &dir.path().join("training"),
            "Training",
            "epoch",
            &[
                Panel {
                    y_label: "loss".into(),
                    series: vec![
                        ("train loss (sum of the branch losses)".into(), curve(0.0)),
                        ("val loss".into(), curve(0.1)),
                    ],
                },
                Panel {
                    y_label: "accuracy".into(),
                    series: vec![("val accuracy".into(), curve(0.2))],
                },
            ],
        )?;
        assert_readable(&files[1]);
        Ok(())
    }

    /// Epochs (whole numbers) get whole-number ticks, written without decimals; other x
    /// values keep plotters' own ticks.
    #[test]
    fn whole_number_x_values_get_whole_number_ticks() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let tick_labels = |points: Vec<(f64, f64)>, name: &str| -> Result<Vec<String>> {
            let files = lines(
                &dir.path().join(name),
                "Training",
                "epoch",
                &[Panel {
                    y_label: "loss".into(),
                    series: vec![("val loss".into(), points)],
                }],
            )?;
            let svg = std::fs::read_to_string(&files[1])?;
            let (_, placed) = texts(&svg);
            // The x tick labels: the lowest row of numbers (the y ticks stand above it).
            let numbers: Vec<Placed> = placed.into_iter().filter(|p| p.text.parse::<f64>().is_ok()).collect();
            let lowest = numbers.iter().map(|p| p.top).fold(0.0, f64::max);
            Ok(numbers
                .into_iter()
                .filter(|p| p.top > lowest - 2.0)
                .map(|p| p.text)
                .collect())
        };
        let epochs = tick_labels((1..=7).map(|e| (f64::from(e), 1.0 / f64::from(e))).collect(), "epochs")?;
        assert!(!epochs.is_empty());
        assert!(epochs.iter().all(|t| !t.contains('.')), "{epochs:?}");
        let fractions = tick_labels((0..6).map(|i| (f64::from(i) * 0.2, 0.5)).collect(), "noise")?;
        assert!(fractions.iter().any(|t| t.contains('.')), "{fractions:?}");
        Ok(())
    }

    /// The checker itself: two labels drawn on top of each other, and one past the edge,
    /// are caught.
    #[test]
    fn the_layout_check_sees_overlaps_and_clipping() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let svg = dir.path().join("bad.svg");
        {
            let area = SVGBackend::new(&svg, (300, 100)).into_drawing_area();
            let style = label_style(LABEL_SIZE, HPos::Left, VPos::Center);
            let _ = area.draw(&Text::new("first label".to_string(), (10, 50), style.clone()));
            let _ = area.draw(&Text::new("second label".to_string(), (40, 52), style));
            let _ = area.present();
        }
        let overlapping = std::panic::catch_unwind(|| assert_readable(&svg));
        assert!(overlapping.is_err());
        {
            let area = SVGBackend::new(&svg, (300, 100)).into_drawing_area();
            let style = label_style(LABEL_SIZE, HPos::Center, VPos::Top);
            let _ = area.draw(&Text::new(
                "a title far too long for a canvas of three hundred pixels".to_string(),
                (150, 5),
                style,
            ));
            let _ = area.present();
        }
        let clipped = std::panic::catch_unwind(|| assert_readable(&svg));
        assert!(clipped.is_err());
    }
}
