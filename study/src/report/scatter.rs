//! Predictions against labels: one dot per segment on equal axes with the identity line, and
//! below it the histogram of the residuals (prediction − label) on the same segments.

use super::svg::{
    integer_ticks, is_plottable, padded, range, ticks, value, Anchor, Area, Axis, Canvas, Key,
    Scale, Stroke, Swatch,
};

const POINT: &str = "#1f77b4";
const BAR: &str = "#9467bd";

/// A labelled prediction of one segment.
#[derive(Debug, Clone)]
pub(crate) struct Labelled {
    pub(crate) segment: String,
    pub(crate) label: f64,
    pub(crate) prediction: f64,
}

/// A drawn scatter plot and what it left out.
pub(crate) struct Scatter {
    pub(crate) svg: String,
    /// Segments drawn as dots.
    pub(crate) drawn: usize,
    /// Segments with a finite label and prediction (all counted in the histogram).
    pub(crate) plottable: usize,
    /// Segments left out because a value is not finite.
    pub(crate) left_out: usize,
}

/// The plot of `points` titled `title`, at most `most` dots (every k-th segment, in table
/// order, beyond that); `None` when no segment has finite values.
pub(crate) fn scatter(title: &str, points: &[Labelled], most: usize) -> Option<Scatter> {
    let kept: Vec<&Labelled> = points
        .iter()
        .filter(|p| is_plottable(p.label) && is_plottable(p.prediction))
        .collect();
    let (lo, hi) = range(kept.iter().flat_map(|p| [p.label, p.prediction]))?;
    let (lo, hi) = padded(lo, hi);
    let every = kept.len().div_ceil(most.max(1)).max(1);
    let keys = [
        Key {
            label: "segment".into(),
            swatch: Swatch::Dot { color: POINT },
        },
        Key {
            label: "identity: prediction = label".into(),
            swatch: Swatch::Line {
                color: "#444444",
                dash: Some("5 4"),
                width: 1.2,
            },
        },
    ];
    let area = Area {
        left: 62.0,
        top: 62.0,
        right: 392.0,
        bottom: 392.0,
    };
    let mut svg = Canvas::new(area.right + 16.0, 612.0, title);
    svg.legend_row(area.left, 40.0, &keys);
    svg.styled_text(
        area.left,
        20.0,
        Anchor::Start,
        r#"font-weight="bold""#,
        title,
    );
    let x = Scale::new((lo, hi), area.left, area.right);
    let y = Scale::new((lo, hi), area.bottom, area.top);
    let axis_ticks = ticks((lo, hi), 6);
    svg.axes(
        area,
        &Axis {
            scale: x,
            ticks: axis_ticks.clone(),
            title: "label".into(),
        },
        &Axis {
            scale: y,
            ticks: axis_ticks,
            title: "prediction".into(),
        },
    );
    svg.open("data");
    svg.line(
        (x.at(lo), y.at(lo)),
        (x.at(hi), y.at(hi)),
        Stroke {
            color: "#444444",
            width: 1.2,
            dash: Some("5 4"),
        },
    );
    let mut drawn = 0;
    for p in kept.iter().step_by(every) {
        drawn += 1;
        svg.dot(
            (x.at(p.label), y.at(p.prediction)),
            2.4,
            POINT,
            r#"fill-opacity="0.45""#,
            Some(&format!(
                "{}: label {}, prediction {}",
                p.segment,
                value(p.label),
                value(p.prediction)
            )),
        );
    }
    svg.close();
    let residuals: Vec<f64> = kept.iter().map(|p| p.prediction - p.label).collect();
    histogram(
        &mut svg,
        Area {
            left: area.left,
            top: 458.0,
            right: area.right,
            bottom: 562.0,
        },
        &residuals,
    );
    Some(Scatter {
        svg: svg.finish(),
        drawn,
        plottable: kept.len(),
        left_out: points.len() - kept.len(),
    })
}

/// The residuals' histogram in `area`, their mean and standard deviation above it.
fn histogram(svg: &mut Canvas, area: Area, residuals: &[f64]) {
    let Some((lo, hi)) = range(residuals.iter().copied()) else {
        return;
    };
    let (lo, hi) = if hi - lo > 0.0 {
        (lo, hi)
    } else {
        padded(lo, hi)
    };
    let bins = ((residuals.len() as f64).sqrt().round() as usize).clamp(5, 40);
    let step = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for r in residuals {
        let bin = (((r - lo) / step).floor().max(0.0) as usize).min(bins - 1);
        counts[bin] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let x = Scale::new((lo, hi), area.left, area.right);
    let y = Scale::new((0.0, most * 1.1), area.bottom, area.top);
    svg.axes(
        area,
        &Axis {
            scale: x,
            ticks: ticks((lo, hi), 6),
            title: "residual (prediction − label), all segments".into(),
        },
        &Axis {
            scale: y,
            ticks: integer_ticks((0.0, most * 1.1), 3),
            title: "segments".into(),
        },
    );
    svg.open("data");
    for (i, &count) in counts.iter().enumerate() {
        let (a, b) = (lo + step * i as f64, lo + step * (i + 1) as f64);
        svg.rect(
            (x.at(a) + 0.5, y.at(0.0)),
            (x.at(b) - 0.5, y.at(count as f64)),
            BAR,
            r#"fill-opacity="0.7""#,
            Some(&format!(
                "residual {} to {}: {count} segment(s)",
                value(a),
                value(b)
            )),
        );
    }
    if x.holds(0.0) {
        svg.line(
            (x.at(0.0), area.top),
            (x.at(0.0), area.bottom),
            Stroke {
                color: "#444444",
                width: 1.2,
                dash: Some("5 4"),
            },
        );
    }
    svg.close();
    let (mean, sd) = mean_and_sd(residuals);
    svg.text(
        area.right,
        area.top - 8.0,
        Anchor::End,
        &format!("residuals: mean {}, sd {}", value(mean), value(sd)),
    );
}

/// Mean and standard deviation of `values`, each summed as a fraction of the largest
/// magnitude, so that values near 1e300 neither overflow nor lose their exactness.
fn mean_and_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let largest = |xs: &[f64]| xs.iter().map(|x| x.abs()).fold(0.0, f64::max);
    let scale = largest(values);
    if scale == 0.0 {
        return (0.0, 0.0);
    }
    let mean = values.iter().map(|v| v / scale).sum::<f64>() / n * scale;
    let deviations: Vec<f64> = values.iter().map(|v| v - mean).collect();
    let spread = largest(&deviations);
    if spread == 0.0 {
        return (mean, 0.0);
    }
    let sd = spread * (deviations.iter().map(|d| (d / spread).powi(2)).sum::<f64>() / n).sqrt();
    (mean, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(pairs: &[(f64, f64)]) -> Vec<Labelled> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, &(label, prediction))| Labelled {
                segment: format!("v{i}"),
                label,
                prediction,
            })
            .collect()
    }

    #[test]
    fn extreme_degenerate_and_non_finite_values_plot_or_are_left_out() {
        let cases: [&[(f64, f64)]; 5] = [
            &[(0.0, -1e300), (1.0, 1e300)],
            &[(0.0, 1e300), (1.0, 1e300)],
            &[(3.0, 0.25)],
            &[(0.0, 1.0), (0.0, 1.0 + 1e-15)],
            &[(f64::NAN, 1.0), (1.0, f64::MAX), (1.0, 2.0)],
        ];
        for points in cases {
            let plot = scatter("t", &labelled(points), 100).unwrap();
            assert!(plot.svg.starts_with("<svg") && plot.svg.contains("<circle"));
            assert!(!plot.svg.contains("NaN") && !plot.svg.contains("inf"));
        }
        let plot = scatter("t", &labelled(cases[4]), 100).unwrap();
        assert_eq!((plot.drawn, plot.left_out), (1, 2));
        assert!(scatter("t", &labelled(&[(f64::NAN, 1.0)]), 100).is_none());
        assert_eq!(mean_and_sd(&[1e300, -1e300]), (0.0, 1e300));
        assert_eq!(mean_and_sd(&[0.5; 7]), (0.5, 0.0));
    }

    #[test]
    fn many_points_are_thinned_and_all_counted_in_the_histogram() {
        let pairs: Vec<(f64, f64)> = (0..1000)
            .map(|i| (f64::from(i), f64::from(i) + 0.5))
            .collect();
        let plot = scatter("t", &labelled(&pairs), 300).unwrap();
        assert_eq!((plot.drawn, plot.plottable), (250, 1000));
        assert!(plot.svg.contains("v4: label 4.000, prediction 4.500"));
        assert!(
            plot.svg.contains("residuals: mean 0.5000, sd 0.000"),
            "{}",
            plot.svg
        );
        let bars: usize = plot
            .svg
            .match_indices("segment(s)</title>")
            .map(|(at, _)| {
                let start = plot.svg[..at].rfind(": ").unwrap() + 2;
                plot.svg[start..at].trim().parse::<usize>().unwrap()
            })
            .sum();
        assert_eq!(bars, 1000);
    }
}
