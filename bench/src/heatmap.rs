//! `ratios.svg`: where valkeyrie is slower, and by how much, at a glance. A heatmap of
//! workload × backend with the throughput ratio printed in each cell, one panel against the
//! raw client and one against the Go library. Colours diverge around 1.0 on a log scale
//! (red: valkeyrie slower, blue: faster, saturated at 4× either way), and a cell below the
//! 0.95 target gets a dark frame, so the cells that need work stand out without reading a
//! number.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::driver::BenchResult;

/// One workload on one backend: valkeyrie's throughput over each other side's.
pub(crate) struct Ratio {
    /// The backend's name, a column.
    pub(crate) backend: String,
    /// The workload's name, a row.
    pub(crate) workload: String,
    /// Over the raw client.
    pub(crate) raw: f64,
    /// Over the Go library, where it has the backend.
    pub(crate) go: Option<f64>,
}

/// The ratio below which a cell is framed: the project's target against the Go library,
/// and a useful line against the raw client too.
const TARGET: f64 = 0.95;
/// Where the colour scale saturates: 4× slower or faster.
const SATURATION: f64 = 4.0;

const MARGIN: i32 = 20;
const LABEL_WIDTH: i32 = 260;
const CELL_WIDTH: i32 = 88;
const CELL_HEIGHT: i32 = 28;
const PANEL_GAP: i32 = 36;
/// From the top to the first row: title, subtitle, panel titles, backend names.
const HEADER: i32 = 112;
const LEGEND_HEIGHT: i32 = 70;

const SLOWER: RGBColor = RGBColor(0xd7, 0x30, 0x27);
const FASTER: RGBColor = RGBColor(0x45, 0x75, 0xb4);
const EVEN: RGBColor = RGBColor(0xf7, 0xf7, 0xf7);
const MISSING: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);

/// Draws the chart of `ratios` to `path`; `subtitle` says what was measured and how.
pub(crate) fn draw(path: &Path, ratios: &[Ratio], subtitle: &str) -> BenchResult<()> {
    let draw_error = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let workloads = in_order(ratios.iter().map(|r| r.workload.as_str()));
    let backends = in_order(ratios.iter().map(|r| r.backend.as_str()));
    let go_backends: Vec<&str> = backends
        .iter()
        .copied()
        .filter(|b| ratios.iter().any(|r| r.backend == *b && r.go.is_some()))
        .collect();
    let raw_width = CELL_WIDTH * backends.len() as i32;
    let go_width = CELL_WIDTH * go_backends.len() as i32;
    let width = MARGIN
        + LABEL_WIDTH
        + raw_width
        + if go_backends.is_empty() {
            0
        } else {
            PANEL_GAP + go_width
        }
        + MARGIN;
    let height = HEADER + CELL_HEIGHT * workloads.len() as i32 + LEGEND_HEIGHT + MARGIN;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let text = |size: f64, style: FontStyle, h: HPos| {
        ("sans-serif", size, style)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(h, VPos::Center))
    };
    let put = |s: &str, at: (i32, i32), style: &TextStyle| root.draw(&Text::new(s.to_owned(), at, style.clone()));

    put(
        "Throughput: valkeyrie ÷ the other side (above 1: valkeyrie is faster)",
        (MARGIN, MARGIN + 6),
        &text(20.0, FontStyle::Bold, HPos::Left),
    )
    .map_err(|e| draw_error(&e))?;
    put(
        subtitle,
        (MARGIN, MARGIN + 32),
        &text(13.0, FontStyle::Normal, HPos::Left),
    )
    .map_err(|e| draw_error(&e))?;

    let first_row = HEADER;
    for (row, workload) in workloads.iter().enumerate() {
        let y = first_row + CELL_HEIGHT * row as i32 + CELL_HEIGHT / 2;
        put(workload, (MARGIN, y), &text(14.0, FontStyle::Normal, HPos::Left)).map_err(|e| draw_error(&e))?;
    }

    let panels = [
        ("against the raw client", &backends, MARGIN + LABEL_WIDTH, false),
        (
            "against the Go library (kvtools/valkeyrie)",
            &go_backends,
            MARGIN + LABEL_WIDTH + raw_width + PANEL_GAP,
            true,
        ),
    ];
    for (title, columns, left, against_go) in panels {
        if columns.is_empty() {
            continue;
        }
        put(title, (left, HEADER - 44), &text(15.0, FontStyle::Bold, HPos::Left)).map_err(|e| draw_error(&e))?;
        for (column, backend) in columns.iter().enumerate() {
            let x = left + CELL_WIDTH * column as i32;
            put(
                backend,
                (x + CELL_WIDTH / 2, HEADER - 16),
                &text(14.0, FontStyle::Normal, HPos::Center),
            )
            .map_err(|e| draw_error(&e))?;
            for (row, workload) in workloads.iter().enumerate() {
                let y = first_row + CELL_HEIGHT * row as i32;
                let ratio = ratios
                    .iter()
                    .find(|r| r.backend == *backend && r.workload == *workload)
                    .and_then(|r| if against_go { r.go } else { Some(r.raw) });
                cell(&root, (x, y), ratio).map_err(|e| draw_error(&e))?;
            }
        }
    }
    legend(
        &root,
        MARGIN + LABEL_WIDTH,
        first_row + CELL_HEIGHT * workloads.len() as i32 + 22,
    )
    .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))
}

/// The distinct names in the order they first appear.
fn in_order<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// One cell with its top-left corner at `at`: its colour, its ratio as text, and a frame
/// below the target. No ratio (the workload failed there) is a grey cell with a dash.
fn cell(root: &Area<'_>, at: (i32, i32), ratio: Option<f64>) -> DrawResult {
    let (x, y) = at;
    let corners = [(x + 1, y + 1), (x + CELL_WIDTH - 1, y + CELL_HEIGHT - 1)];
    let Some(ratio) = ratio else {
        root.draw(&Rectangle::new(corners, MISSING.filled()))?;
        return root.draw(&Text::new(
            "–",
            (x + CELL_WIDTH / 2, y + CELL_HEIGHT / 2),
            centred(false, BLACK),
        ));
    };
    let shade = strength(ratio);
    // Judged as printed, so that a cell reading 0.95 is never framed as below 0.95.
    let below = (ratio * 100.0).round() / 100.0 < TARGET;
    root.draw(&Rectangle::new(corners, colour(ratio).filled()))?;
    if below {
        root.draw(&Rectangle::new(
            [(x + 2, y + 2), (x + CELL_WIDTH - 2, y + CELL_HEIGHT - 2)],
            BLACK.stroke_width(2),
        ))?;
    }
    let ink = if shade > 0.6 { WHITE } else { BLACK };
    root.draw(&Text::new(
        label(ratio),
        (x + CELL_WIDTH / 2, y + CELL_HEIGHT / 2),
        centred(below, ink),
    ))
}

fn centred(bold: bool, ink: RGBColor) -> TextStyle<'static> {
    let style = if bold { FontStyle::Bold } else { FontStyle::Normal };
    ("sans-serif", 14.0, style)
        .into_font()
        .color(&ink)
        .pos(Pos::new(HPos::Center, VPos::Center))
}

/// How far from even `ratio` is on the log scale, 0 (even) to 1 (saturated).
fn strength(ratio: f64) -> f64 {
    (ratio.max(1e-9).log2().abs() / SATURATION.log2()).min(1.0)
}

/// The cell colour: from near-white at 1.0 towards red below it and blue above it.
fn colour(ratio: f64) -> RGBColor {
    let end = if ratio < 1.0 { SLOWER } else { FASTER };
    let t = strength(ratio);
    let mix = |from: u8, to: u8| (f64::from(from) + (f64::from(to) - f64::from(from)) * t).round() as u8;
    RGBColor(mix(EVEN.0, end.0), mix(EVEN.1, end.1), mix(EVEN.2, end.2))
}

/// A ratio as printed: two decimals below 10, then fewer.
fn label(ratio: f64) -> String {
    match ratio {
        r if r < 10.0 => format!("{r:.2}"),
        r if r < 100.0 => format!("{r:.1}"),
        r => format!("{r:.0}"),
    }
}

/// The colour scale from 1/4 to 4 with its ticks, and what a frame means.
fn legend(root: &Area<'_>, left: i32, top: i32) -> DrawResult {
    const WIDTH: i32 = 360;
    const STEPS: i32 = 72;
    let span = SATURATION.log2();
    let x_of = |ratio: f64| left + ((ratio.log2() + span) / (2.0 * span) * f64::from(WIDTH)).round() as i32;
    for step in 0..STEPS {
        let from = left + WIDTH * step / STEPS;
        let to = left + WIDTH * (step + 1) / STEPS;
        let ratio = 2f64.powf(-span + 2.0 * span * (f64::from(step) + 0.5) / f64::from(STEPS));
        root.draw(&Rectangle::new([(from, top), (to, top + 14)], colour(ratio).filled()))?;
    }
    let small = |h: HPos| {
        ("sans-serif", 12.0)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(h, VPos::Top))
    };
    for (ratio, name) in [(0.25, "¼"), (0.5, "½"), (1.0, "1"), (2.0, "2"), (4.0, "4")] {
        let x = x_of(ratio);
        root.draw(&PathElement::new([(x, top + 14), (x, top + 19)], BLACK))?;
        root.draw(&Text::new(name, (x, top + 21), small(HPos::Center)))?;
    }
    root.draw(&Text::new("valkeyrie slower", (left, top + 38), small(HPos::Left)))?;
    root.draw(&Text::new(
        "valkeyrie faster",
        (left + WIDTH, top + 38),
        small(HPos::Right),
    ))?;
    let frame_at = left + WIDTH + 40;
    root.draw(&Rectangle::new(
        [(frame_at, top - 2), (frame_at + 30, top + 16)],
        BLACK.stroke_width(2),
    ))?;
    root.draw(&Text::new(
        format!("framed, in bold: below {TARGET}"),
        (frame_at + 40, top + 7),
        ("sans-serif", 12.0)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center)),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_diverge_around_one_and_saturate() {
        assert_eq!(colour(1.0), EVEN);
        assert_eq!(colour(0.25), SLOWER);
        assert_eq!(colour(1.0 / 16.0), SLOWER);
        assert_eq!(colour(4.0), FASTER);
        assert_eq!(colour(33.0), FASTER);
        assert!(strength(0.5) > strength(0.9));
        assert!(
            (strength(0.5) - strength(2.0)).abs() < 1e-12,
            "log scale: ½ and 2 are as far from 1"
        );
    }

    #[test]
    fn labels_keep_two_significant_decimals_where_they_matter() {
        assert_eq!(label(0.947), "0.95");
        assert_eq!(label(33.42), "33.4");
        assert_eq!(label(123.4), "123");
    }
}
