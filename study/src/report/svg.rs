//! Hand-written SVG: a canvas, linear scales with round ticks, axes, a legend beside the plot
//! area, and the marks the report's plots are drawn with. Coordinates are written with one
//! decimal and nothing depends on the machine, so the same data gives the same bytes. Every
//! drawn value sits in a `<g class="data">` group, and every point can carry a `<title>` (its
//! values, shown on hover).

use std::fmt::Write as _;

/// Values beyond this magnitude are left out of plots like non-finite ones: the padded axis
/// range of anything smaller stays finite.
const PLOTTABLE: f64 = 1e300;
/// Tick labels of an axis at most.
const MAX_TICKS: usize = 40;
/// Characters of a legend label at most (the whole label is its tooltip).
const LEGEND_CHARS: usize = 44;
/// Font size of labels, in pixels; the width of a character is taken as 0.6 of it.
pub(crate) const FONT: f64 = 12.0;

/// Colours of series, groups and subjects, in order (Tableau 10, readable on white).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Dash patterns, for when colours repeat.
const DASHES: [Option<&str>; 3] = [None, Some("6 3"), Some("2 2")];

/// The `i`-th colour.
pub(crate) fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The `i`-th dash pattern past the colours (solid for the first ten).
pub(crate) fn dash(i: usize) -> Option<&'static str> {
    DASHES[(i / PALETTE.len()) % DASHES.len()]
}

/// Text made safe inside XML and HTML (element content and quoted attributes).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A value as tooltips and notes show it: four significant figures.
pub(crate) fn value(v: f64) -> String {
    if v == 0.0 {
        "0.000".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.decimals$}")
    } else if v.is_finite() {
        format!("{v:.3e}")
    } else {
        v.to_string()
    }
}

/// A pixel coordinate: one decimal.
fn px(v: f64) -> String {
    let v = if v.abs() < 0.05 { 0.0 } else { v };
    format!("{v:.1}")
}

/// Whether a value can be drawn.
pub(crate) fn is_plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= PLOTTABLE
}

/// An axis range around `lo..=hi` (plottable values) with a margin; never empty.
pub(crate) fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let scale = lo.abs().max(hi.abs());
    let pad = if hi - lo > scale * 1e-9 {
        (hi - lo) * 0.05
    } else {
        scale * 0.05 + 0.5
    };
    (lo - pad, hi + pad)
}

/// The range of plottable values; `None` for none.
pub(crate) fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|&v| is_plottable(v))
        .fold(None, |r, v| match r {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

/// A linear map from values `lo..hi` to pixels `from..to`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Scale {
    /// Values `lo..hi` (`lo < hi`) onto pixels `from..to`.
    pub(crate) fn new((lo, hi): (f64, f64), from: f64, to: f64) -> Scale {
        Scale { lo, hi, from, to }
    }

    /// The pixel of value `v`.
    pub(crate) fn at(&self, v: f64) -> f64 {
        self.from + (v - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }

    /// Whether `v` lies in the scale's range.
    pub(crate) fn holds(&self, v: f64) -> bool {
        (self.lo..=self.hi).contains(&v)
    }

    /// The value range.
    pub(crate) fn domain(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }
}

/// A round step near `span / count`: 1, 2 or 5 times a power of ten.
fn round_step(span: f64, count: usize) -> f64 {
    let raw = span / count.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    let mantissa = raw / power;
    let nice = if mantissa <= 1.0 {
        1.0
    } else if mantissa <= 2.0 {
        2.0
    } else if mantissa <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// Round tick values in `lo..=hi` (about `count` of them) with their labels.
pub(crate) fn ticks((lo, hi): (f64, f64), count: usize) -> Vec<(f64, String)> {
    let step = round_step(hi - lo, count);
    if !(step.is_finite() && step > 0.0) {
        return Vec::new();
    }
    let decimals = (-step.log10().floor()).clamp(0.0, 12.0) as usize;
    let scientific = !(1e-4..1e5).contains(&step);
    let first = (lo / step).ceil();
    (0..MAX_TICKS)
        .map(|k| (first + k as f64) * step)
        .take_while(|&v| v <= hi + step * 1e-9)
        .map(|v| {
            let label = if scientific {
                format!("{v:.1e}")
            } else {
                format!("{v:.decimals$}")
            };
            (v, label.replace('-', "−"))
        })
        .collect()
}

/// Whole-number ticks in `lo..=hi` (about `count`), for counts such as epochs.
pub(crate) fn integer_ticks((lo, hi): (f64, f64), count: usize) -> Vec<(f64, String)> {
    let step = round_step(hi - lo, count).max(1.0).round();
    let first = (lo / step).ceil();
    (0..MAX_TICKS)
        .map(|k| (first + k as f64) * step)
        .take_while(|&v| v <= hi)
        .map(|v| (v, format!("{v:.0}")))
        .collect()
}

/// The pixel rectangle values are drawn in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Area {
    pub(crate) left: f64,
    pub(crate) top: f64,
    pub(crate) right: f64,
    pub(crate) bottom: f64,
}

/// How a line is drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stroke<'a> {
    pub(crate) color: &'a str,
    pub(crate) width: f64,
    pub(crate) dash: Option<&'a str>,
}

impl Stroke<'_> {
    fn attributes(&self) -> String {
        let mut a = format!(
            r#"fill="none" stroke="{}" stroke-width="{}""#,
            self.color, self.width
        );
        if let Some(d) = self.dash {
            let _ = write!(a, r#" stroke-dasharray="{d}""#);
        }
        a
    }
}

/// Where text is anchored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn name(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// One entry of a legend.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) label: String,
    pub(crate) swatch: Swatch,
}

/// What a legend entry shows beside its label.
#[derive(Debug, Clone)]
pub(crate) enum Swatch {
    /// A line segment.
    Line {
        color: &'static str,
        dash: Option<&'static str>,
        width: f64,
    },
    /// A dot.
    Dot { color: &'static str },
    /// A filled box.
    Band { color: &'static str },
}

/// The width a legend of `keys` takes.
pub(crate) fn legend_width(keys: &[Key]) -> f64 {
    let chars = keys
        .iter()
        .map(|k| k.label.chars().count().min(LEGEND_CHARS))
        .max()
        .unwrap_or(0);
    34.0 + chars as f64 * FONT * 0.6
}

/// A picture being drawn.
pub(crate) struct Canvas {
    out: String,
}

impl Canvas {
    /// A `width` × `height` picture described by `label` (its accessible name).
    pub(crate) fn new(width: f64, height: f64, label: &str) -> Canvas {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}" font-family="sans-serif" font-size="{FONT}">"#,
            w = px(width),
            h = px(height),
            label = escape(label),
        );
        out.push('\n');
        let _ = writeln!(
            out,
            r##"<rect width="{}" height="{}" fill="#ffffff"/>"##,
            px(width),
            px(height)
        );
        Canvas { out }
    }

    /// Starts a group of class `class` (`data` for drawn values).
    pub(crate) fn open(&mut self, class: &str) {
        let _ = writeln!(self.out, r#"<g class="{class}">"#);
    }

    /// Ends the group last opened.
    pub(crate) fn close(&mut self) {
        self.out.push_str("</g>\n");
    }

    /// Text at `(x, y)`.
    pub(crate) fn text(&mut self, x: f64, y: f64, anchor: Anchor, text: &str) {
        self.styled_text(x, y, anchor, "", text);
    }

    /// Text with extra attributes (`font-weight="bold"`, a fill, a rotation).
    pub(crate) fn styled_text(&mut self, x: f64, y: f64, anchor: Anchor, extra: &str, text: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{}" y="{}" text-anchor="{}"{}{}>{}</text>"#,
            px(x),
            px(y),
            anchor.name(),
            if extra.is_empty() { "" } else { " " },
            extra,
            escape(text)
        );
    }

    /// A straight line.
    pub(crate) fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), stroke: Stroke<'_>) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" {}/>"#,
            px(x1),
            px(y1),
            px(x2),
            px(y2),
            stroke.attributes()
        );
    }

    /// A line through `points` (pixels); nothing for fewer than two.
    pub(crate) fn polyline(&mut self, points: &[(f64, f64)], stroke: Stroke<'_>) {
        if points.len() < 2 {
            return;
        }
        let coords: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{},{}", px(x), px(y)))
            .collect();
        let _ = writeln!(
            self.out,
            r#"<polyline points="{}" {} stroke-linejoin="round"/>"#,
            coords.join(" "),
            stroke.attributes()
        );
    }

    /// A dot of radius `r`, with its values as a tooltip.
    pub(crate) fn dot(
        &mut self,
        (x, y): (f64, f64),
        r: f64,
        fill: &str,
        extra: &str,
        tip: Option<&str>,
    ) {
        let _ = write!(
            self.out,
            r#"<circle cx="{}" cy="{}" r="{}" fill="{fill}"{}{}"#,
            px(x),
            px(y),
            r,
            if extra.is_empty() { "" } else { " " },
            extra
        );
        self.close_with_tip("circle", tip);
    }

    /// A rectangle (corners in any order), with a tooltip.
    pub(crate) fn rect(
        &mut self,
        (x1, y1): (f64, f64),
        (x2, y2): (f64, f64),
        fill: &str,
        extra: &str,
        tip: Option<&str>,
    ) {
        let _ = write!(
            self.out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{fill}"{}{}"#,
            px(x1.min(x2)),
            px(y1.min(y2)),
            px((x2 - x1).abs()),
            px((y2 - y1).abs()),
            if extra.is_empty() { "" } else { " " },
            extra
        );
        self.close_with_tip("rect", tip);
    }

    fn close_with_tip(&mut self, element: &str, tip: Option<&str>) {
        match tip {
            Some(tip) => {
                let _ = writeln!(self.out, "><title>{}</title></{element}>", escape(tip));
            }
            None => self.out.push_str("/>\n"),
        }
    }

    /// Grid lines, axis lines, tick labels and axis titles of `area`.
    pub(crate) fn axes(&mut self, area: Area, x: &Axis, y: &Axis) {
        let grid = Stroke {
            color: "#e4e4e4",
            width: 1.0,
            dash: None,
        };
        let axis = Stroke {
            color: "#555555",
            width: 1.0,
            dash: None,
        };
        self.open("axes");
        for (v, label) in &x.ticks {
            let at = x.scale.at(*v);
            self.line((at, area.top), (at, area.bottom), grid);
            self.text(at, area.bottom + 16.0, Anchor::Middle, label);
        }
        for (v, label) in &y.ticks {
            let at = y.scale.at(*v);
            self.line((area.left, at), (area.right, at), grid);
            self.text(area.left - 6.0, at + 4.0, Anchor::End, label);
        }
        self.line((area.left, area.bottom), (area.right, area.bottom), axis);
        self.line((area.left, area.top), (area.left, area.bottom), axis);
        if !x.title.is_empty() {
            self.text(
                (area.left + area.right) / 2.0,
                area.bottom + 34.0,
                Anchor::Middle,
                &x.title,
            );
        }
        let (cx, cy) = (area.left - 46.0, (area.top + area.bottom) / 2.0);
        self.styled_text(
            cx,
            cy,
            Anchor::Middle,
            &format!(r#"transform="rotate(-90 {} {})""#, px(cx), px(cy)),
            &y.title,
        );
        self.close();
    }

    /// A legend of `keys` with its top left corner at `(x, y)`, one entry per line.
    pub(crate) fn legend(&mut self, x: f64, y: f64, keys: &[Key]) {
        self.open("legend");
        for (i, key) in keys.iter().enumerate() {
            self.key(x, y + i as f64 * 18.0, key);
        }
        self.close();
    }

    /// A legend of `keys` on one line from `(x, y)`.
    pub(crate) fn legend_row(&mut self, x: f64, y: f64, keys: &[Key]) {
        self.open("legend");
        let mut at = x;
        for key in keys {
            self.key(at, y, key);
            at += 44.0 + key.label.chars().count().min(LEGEND_CHARS) as f64 * FONT * 0.6;
        }
        self.close();
    }

    /// One legend entry: its swatch at `(x, y)`, its label after it.
    fn key(&mut self, x: f64, y: f64, key: &Key) {
        match &key.swatch {
            Swatch::Line { color, dash, width } => self.line(
                (x, y),
                (x + 22.0, y),
                Stroke {
                    color,
                    width: *width,
                    dash: *dash,
                },
            ),
            Swatch::Dot { color } => self.dot((x + 11.0, y), 4.0, color, "", None),
            Swatch::Band { color } => self.rect(
                (x, y - 5.0),
                (x + 22.0, y + 5.0),
                color,
                r#"opacity="0.25""#,
                None,
            ),
        }
        let shown: String = key.label.chars().take(LEGEND_CHARS).collect();
        if shown.len() < key.label.len() {
            let _ = writeln!(
                self.out,
                r#"<text x="{}" y="{}" text-anchor="start">{}…<title>{}</title></text>"#,
                px(x + 28.0),
                px(y + 4.0),
                escape(&shown),
                escape(&key.label)
            );
        } else {
            self.text(x + 28.0, y + 4.0, Anchor::Start, &key.label);
        }
    }

    /// The finished SVG.
    pub(crate) fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// An axis: its scale, ticks and title.
pub(crate) struct Axis {
    pub(crate) scale: Scale,
    pub(crate) ticks: Vec<(f64, String)>,
    pub(crate) title: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let t = ticks((0.23, 0.71), 5);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.3", "0.4", "0.5", "0.6", "0.7"]);
        let t = integer_ticks((0.4, 12.6), 8);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["2", "4", "6", "8", "10", "12"]);
        // Few epochs: every epoch, never a fraction of one.
        let t = integer_ticks((0.9, 3.1), 8);
        assert_eq!(
            t.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(ticks((-0.5, 0.5), 4)[0].1, "−0.5");
        for (lo, hi) in [(-1e300, 1e300), (0.0, 1e-12), (1e6, 1e6 + 1.0), (5.0, 5.0)] {
            let (lo, hi) = padded(lo, hi);
            let t = ticks((lo, hi), 6);
            assert!(t.len() <= MAX_TICKS && t.iter().all(|(v, _)| *v >= lo && *v <= hi));
            assert!(integer_ticks((lo, hi), 6).len() <= MAX_TICKS);
        }
        assert!(ticks((0.0, f64::NAN), 5).is_empty());
    }

    #[test]
    fn text_is_escaped_and_values_have_four_figures() {
        assert_eq!(
            escape(r#"<a & "b">'"#),
            "&lt;a &amp; &quot;b&quot;&gt;&#39;"
        );
        assert_eq!(escape("a\u{0}b"), "a\u{fffd}b");
        assert_eq!(value(0.461785), "0.4618");
        assert_eq!(value(12.5), "12.50");
        assert_eq!(value(0.0), "0.000");
        assert_eq!(value(1e-7), "1.000e-7");
        assert_eq!(value(f64::NAN), "NaN");
    }

    #[test]
    fn ranges_leave_out_what_cannot_be_drawn() {
        assert_eq!(
            range([1.0, f64::NAN, -2.0, 1e301].into_iter()),
            Some((-2.0, 1.0))
        );
        assert_eq!(range([f64::INFINITY].into_iter()), None);
        let (lo, hi) = padded(3.0, 3.0);
        assert!(lo < 3.0 && hi > 3.0);
    }
}
