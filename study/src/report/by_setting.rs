//! A metric by setting: one column per group of the comparison (a sweep's point, or an
//! evaluation), each seed's run a dot, the mean a bar, the 95% CI of the mean a whisker, the
//! interval the noise flag compares a band, group 0's interval across the plot, and each group
//! marked within noise of group 0 (≈), beyond it (better or worse), or best.

use crate::compare::{Comparison, GroupPoint};

use super::page::Figure;
use super::svg::{
    legend_width, padded, range, ticks, value, Anchor, Area, Axis, Canvas, Key, Scale, Stroke,
    Swatch, FONT,
};

/// Groups drawn in one plot at most (the table holds them all).
pub(crate) const MAX_GROUPS: usize = 40;
/// Characters of a group's label under its column at most.
const LABEL_CHARS: usize = 30;
/// How far the labels under the columns slant (radians).
const SLANT: f64 = 40.0 * std::f64::consts::PI / 180.0;

const BASE: &str = "#555555";
const NOISE: &str = "#8c8c8c";
const BETTER: &str = "#2ca02c";
const WORSE: &str = "#d62728";
const BAND: &str = "#1f77b4";

/// The plot of column `c` of `comparison`, its first [`MAX_GROUPS`] groups in `order`; `None`
/// when no group has a finite value.
pub(crate) fn by_setting(comparison: &Comparison, c: usize, order: &[usize]) -> Option<Figure> {
    let groups: Vec<usize> = order.iter().copied().take(MAX_GROUPS).collect();
    let points: Vec<_> = groups
        .iter()
        .map(|&g| (g, comparison.point(g, c)))
        .collect();
    let (lo, hi) = range(
        points
            .iter()
            .filter_map(|(_, p)| p.as_ref())
            .flat_map(drawn),
    )?;
    let lower = comparison.lower_is_better(c);
    let by = if comparison.stages_differ() {
        "evaluation"
    } else {
        "setting"
    };
    let title = format!(
        "{} by {by} ({} split; {} is better)",
        comparison.column_title(c),
        comparison.split(),
        if lower { "lower" } else { "higher" }
    );
    let seeds = points
        .iter()
        .any(|(_, p)| p.as_ref().is_some_and(|p| p.seeds.len() > 1));
    let keys = legend(seeds);
    let names: Vec<String> = groups.iter().map(|&g| label(comparison, g)).collect();
    let layout = Layout::new(&names, &keys);
    let area = layout.area;
    let y = Scale::new(padded(lo, hi), area.bottom, area.top);
    let mut svg = Canvas::new(layout.width, layout.height, &title);
    svg.styled_text(
        area.left,
        20.0,
        Anchor::Start,
        r#"font-weight="bold""#,
        &title,
    );
    svg.axes(
        area,
        &Axis {
            scale: Scale::new((0.0, 1.0), area.left, area.right),
            ticks: Vec::new(),
            title: String::new(),
        },
        &Axis {
            scale: y,
            ticks: ticks(y.domain(), 6),
            title: comparison.column_title(c),
        },
    );
    let base = comparison.point(0, c);
    svg.open("data");
    if let Some(noise) = base.as_ref().and_then(|p| p.noise) {
        base_band(&mut svg, area, y, noise);
    }
    for (i, (g, point)) in points.iter().enumerate() {
        let Some(p) = point else { continue };
        let column = Column {
            x: layout.x_of(i),
            y,
            color: color_of(*g, p, base.as_ref(), lower),
            name: format!("#{g} {}", comparison.label(*g)),
        };
        column.whisker(&mut svg, p);
        column.mean_and_seeds(&mut svg, p);
        let flag = match (*g, p.within_noise, p.best && comparison.group_count() > 1) {
            (_, _, true) => "best",
            (0, _, _) => "",
            (_, true, _) => "≈",
            _ => "",
        };
        column.flag(&mut svg, p, lower, flag);
        column.label(&mut svg, area.bottom, &names[i]);
    }
    svg.close();
    svg.legend(area.right + 30.0, area.top + 4.0, &keys);
    Some(Figure {
        name: vec![comparison.column_title(c), format!("by_{by}")],
        alt: format!("{} by {by}", comparison.column_title(c)),
        svg: svg.finish(),
    })
}

/// Every value a group's column draws: its seeds, its mean, its CI and noise interval.
fn drawn(p: &GroupPoint<'_>) -> Vec<f64> {
    p.seeds
        .iter()
        .map(|(_, v)| *v)
        .chain([p.mean])
        .chain(p.ci95.into_iter().flat_map(|(a, b)| [a, b]))
        .chain(p.noise.into_iter().flat_map(|(a, b)| [a, b]))
        .collect()
}

/// Where the plot's parts go: one column per group, room left of the plot for the first
/// labels (they slant down to the left) and right of it for the legend.
struct Layout {
    slot: f64,
    area: Area,
    width: f64,
    height: f64,
}

impl Layout {
    fn new(names: &[String], keys: &[Key]) -> Self {
        let slot = (560.0 / names.len() as f64).clamp(40.0, 96.0);
        let reach = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                name.chars().count() as f64 * FONT * 0.6 * SLANT.cos() - slot * (i as f64 + 0.5)
            })
            .fold(0.0, f64::max);
        let left = (reach + 12.0).max(70.0);
        let area = Area {
            left,
            top: 50.0,
            right: left + slot * names.len() as f64,
            bottom: 370.0,
        };
        Layout {
            slot,
            area,
            width: area.right + 30.0 + legend_width(keys),
            height: area.bottom + 40.0 + LABEL_CHARS as f64 * 4.2,
        }
    }

    /// The centre of column `i`.
    fn x_of(&self, i: usize) -> f64 {
        self.area.left + self.slot * (i as f64 + 0.5)
    }
}

/// Group 0's noise interval, across the plot.
fn base_band(svg: &mut Canvas, area: Area, y: Scale, (a, b): (f64, f64)) {
    svg.rect(
        (area.left, y.at(a)),
        (area.right, y.at(b)),
        BAND,
        r#"fill-opacity="0.09""#,
        Some(&format!(
            "group 0's interval {} to {}: a group whose interval overlaps it is within noise",
            value(a),
            value(b)
        )),
    );
}

/// Group 0 grey, a group within noise of it lighter grey, better green, worse red.
fn color_of(
    g: usize,
    p: &GroupPoint<'_>,
    base: Option<&GroupPoint<'_>>,
    lower: bool,
) -> &'static str {
    if g == 0 {
        BASE
    } else if p.within_noise {
        NOISE
    } else if (p.mean < base.map_or(p.mean, |b| b.mean)) == lower {
        BETTER
    } else {
        WORSE
    }
}

/// One group's column: where it is drawn, in which colour, named how in its tips.
struct Column {
    x: f64,
    y: Scale,
    color: &'static str,
    name: String,
}

impl Column {
    /// The 95% CI of the mean as a whisker; the band of mean ± 2 s.e. where there are seeds.
    fn whisker(&self, svg: &mut Canvas, p: &GroupPoint<'_>) {
        let (cx, y, color) = (self.x, self.y, self.color);
        if let Some((a, b)) = p.ci95 {
            let thin = Stroke {
                color,
                width: 1.2,
                dash: None,
            };
            svg.line((cx, y.at(a)), (cx, y.at(b)), thin);
            svg.line((cx - 5.0, y.at(a)), (cx + 5.0, y.at(a)), thin);
            svg.line((cx - 5.0, y.at(b)), (cx + 5.0, y.at(b)), thin);
        }
        if let Some((a, b)) = p.noise.filter(|_| p.seeds.len() > 1) {
            svg.rect(
                (cx - 4.0, y.at(a)),
                (cx + 4.0, y.at(b)),
                color,
                r#"fill-opacity="0.35""#,
                Some(&format!(
                    "{}: mean ± 2 s.e. {} to {}",
                    self.name,
                    value(a),
                    value(b)
                )),
            );
        }
    }

    /// The mean as a bar, each seed's run as a dot spread across the column.
    fn mean_and_seeds(&self, svg: &mut Canvas, p: &GroupPoint<'_>) {
        let (cx, y, color) = (self.x, self.y, self.color);
        svg.rect(
            (cx - 13.0, y.at(p.mean) - 1.3),
            (cx + 13.0, y.at(p.mean) + 1.3),
            color,
            "",
            Some(&format!(
                "{}: mean {}{}",
                self.name,
                value(p.mean),
                p.ci95
                    .map(|(a, b)| format!(", 95% CI {} to {}", value(a), value(b)))
                    .unwrap_or_default()
            )),
        );
        let k = p.seeds.len() as f64;
        for (j, (run, v)) in p.seeds.iter().enumerate() {
            let dx = if k > 1.0 {
                -10.0 + 20.0 * j as f64 / (k - 1.0)
            } else {
                0.0
            };
            svg.dot(
                (cx + dx, y.at(*v)),
                3.6,
                color,
                r##"stroke="#ffffff" stroke-width="0.8""##,
                Some(&format!("{run}: {}", value(*v))),
            );
        }
    }

    /// `flag` (best, ≈) above the column's highest drawn point.
    fn flag(&self, svg: &mut Canvas, p: &GroupPoint<'_>, lower: bool, flag: &str) {
        if flag.is_empty() {
            return;
        }
        let y = self.y;
        let top = p
            .ci95
            .map_or(p.mean, |(a, b)| if lower { a.min(b) } else { a.max(b) });
        let top = y.at(top).min(y.at(p.mean)).min(
            p.seeds
                .iter()
                .map(|(_, v)| y.at(*v))
                .fold(f64::INFINITY, f64::min),
        );
        svg.styled_text(
            self.x,
            top - 8.0,
            Anchor::Middle,
            &format!(r#"fill="{}" font-weight="bold""#, self.color),
            flag,
        );
    }

    /// The group's label under the column, slanted.
    fn label(&self, svg: &mut Canvas, bottom: f64, name: &str) {
        let (lx, ly) = (self.x + 4.0, bottom + 14.0);
        svg.styled_text(
            lx,
            ly,
            Anchor::End,
            &format!(
                r#"transform="rotate(-{:.0} {lx:.1} {ly:.1})""#,
                SLANT.to_degrees()
            ),
            name,
        );
    }
}

/// The legend; the band of mean ± 2 s.e. where a group has several seeds.
/// A group's label under its column: `#g` and what sets it apart, cut to [`LABEL_CHARS`].
fn label(comparison: &Comparison, g: usize) -> String {
    let name = format!("#{g} {}", comparison.label(g));
    if name.chars().count() <= LABEL_CHARS {
        return name;
    }
    let cut: String = name.chars().take(LABEL_CHARS - 1).collect();
    format!("{cut}…")
}

/// The legend; the band of mean ± 2 s.e. where a group has several seeds.
fn legend(seeds: bool) -> Vec<Key> {
    let dot = |label: &str, color: &'static str| Key {
        label: label.into(),
        swatch: Swatch::Dot { color },
    };
    let mut keys = vec![
        dot("a run (one seed)", BASE),
        Key {
            label: "mean".into(),
            swatch: Swatch::Line {
                color: BASE,
                dash: None,
                width: 2.6,
            },
        },
        Key {
            label: "95% CI of the mean (t; one run: bootstrap)".into(),
            swatch: Swatch::Line {
                color: BASE,
                dash: None,
                width: 1.2,
            },
        },
    ];
    if seeds {
        keys.push(Key {
            label: "mean ± 2 s.e. (what the noise flag compares)".into(),
            swatch: Swatch::Band { color: BASE },
        });
    }
    keys.extend([
        Key {
            label: "group 0's interval".into(),
            swatch: Swatch::Band { color: BAND },
        },
        dot("≈ within noise of group 0", NOISE),
        dot("beyond noise, better than group 0", BETTER),
        dot("beyond noise, worse than group 0", WORSE),
    ]);
    keys
}
