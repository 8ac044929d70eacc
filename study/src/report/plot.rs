//! SVG plots (plotters, SVG backend only: no system fonts or image libraries): line charts
//! and scatter plots with an identity line, their file names, and which values can be drawn.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// Values beyond this magnitude are left out of plots like non-finite ones: the padded axis
/// range of anything smaller stays finite.
const PLOTTABLE: f64 = 1e300;

/// A named line of (x, y) points.
pub(crate) type Series = (String, Vec<(f64, f64)>);

/// Plot file names: stage ids and heads come from the lock file and tables, so only letters,
/// digits, `_` and `-` are kept (no path can escape the report folder), and a clash gets a
/// number.
#[derive(Default)]
pub(crate) struct PlotNames {
    /// The names given so far.
    pub(crate) taken: Vec<String>,
}

impl PlotNames {
    /// A new file name `<parts joined by _>.svg`.
    pub(crate) fn next(&mut self, parts: &[&str]) -> String {
        let mut stem: String = parts
            .join("_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        stem.truncate(100);
        let mut name = format!("{stem}.svg");
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{stem}-{n}.svg");
            n += 1;
        }
        self.taken.push(name.clone());
        name
    }
}

fn is_plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= PLOTTABLE
}

/// The points whose both coordinates can be plotted, and how many were left out.
pub(crate) fn plottable_points(points: Vec<(f64, f64)>) -> (Vec<(f64, f64)>, usize) {
    let total = points.len();
    let kept: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|&(x, y)| is_plottable(x) && is_plottable(y))
        .collect();
    let left_out = total - kept.len();
    (kept, left_out)
}

/// An axis range around `lo..=hi` (plottable values) with a margin; never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let scale = lo.abs().max(hi.abs());
    let pad = if hi - lo > scale * 1e-9 {
        (hi - lo) * 0.05
    } else {
        scale * 0.05 + 0.5
    };
    (lo - pad, hi + pad)
}

/// Axis ranges of plottable points; `None` for none.
fn bounds(points: impl Iterator<Item = (f64, f64)>) -> Option<((f64, f64), (f64, f64))> {
    let mut range: Option<(f64, f64, f64, f64)> = None;
    for (x, y) in points {
        range = Some(match range {
            None => (x, x, y, y),
            Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
        });
    }
    range.map(|(x0, x1, y0, y1)| (padded(x0, x1), padded(y0, y1)))
}

pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    let ((x0, x1), (y0, y1)) = bounds(series.iter().flat_map(|(_, p)| p.iter().copied()))
        .ok_or_else(|| anyhow!("plotting {}: no points", path.display()))?;
    let plot = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|e| anyhow!("plotting {}: {e}", path.display()))
}

pub(crate) fn scatter(points: &[(f64, f64)], path: &Path, title: &str) -> Result<()> {
    let ((x0, x1), (y0, y1)) = bounds(points.iter().copied())
        .ok_or_else(|| anyhow!("plotting {}: no points", path.display()))?;
    let (lo, hi) = (x0.min(y0), x1.max(y1));
    let plot = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (520, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("label")
            .y_desc("prediction")
            .draw()?;
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 2, BLUE.mix(0.35).filled())),
        )?;
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.stroke_width(1)))?
            .label("identity")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|e| anyhow!("plotting {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn extreme_and_degenerate_ranges_plot_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [&[(f64, f64)]; 4] = [
            &[(0.0, -1e300), (1.0, 1e300)],
            &[(0.0, 1e300), (1.0, 1e300)],
            &[(3.0, 0.25)],
            &[(0.0, 1.0), (0.0, 1.0 + 1e-15)],
        ];
        for (i, points) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.svg"));
            line_chart(&path, "t", "x", "y", &[("s".into(), points.to_vec())]).unwrap();
            scatter(points, &dir.path().join(format!("{i}s.svg")), "t").unwrap();
            assert!(fs::read_to_string(&path).unwrap().starts_with("<svg"));
        }
        assert!(bounds(std::iter::empty()).is_none());
        let (points, skipped) =
            plottable_points(vec![(f64::NAN, 1.0), (1.0, f64::MAX), (1.0, 2.0)]);
        assert_eq!((points, skipped), (vec![(1.0, 2.0)], 2));
    }

    #[test]
    fn plot_names_stay_inside_the_report_folder() {
        let mut names = PlotNames::default();
        assert_eq!(
            names.next(&["eval", "sentiment", "scatter"]),
            "eval_sentiment_scatter.svg"
        );
        let odd = names.next(&["eval", "../../etc/x", "scatter"]);
        assert!(!odd.contains('/') && !odd.contains(".."), "{odd}");
        assert_eq!(
            names.next(&["eval", "sentiment", "scatter"]),
            "eval_sentiment_scatter-2.svg"
        );
    }
}
