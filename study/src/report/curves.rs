//! Learning curves from history tables: per training stage its train and validation loss per
//! epoch (phases one after the other on a whole-number epoch axis) with the best epoch of each
//! phase, where training stopped early and each change of the learning rate marked; and, for
//! several runs, the validation loss of one stage and subject overlaid, one line per run.

use std::collections::{BTreeMap, BTreeSet};

use mmflow_schemas::history::HistoryRow;
use mmflow_stages::train::settings::{Measure, TOTAL};

use super::page::{Block, Figure, Text};
use super::svg::{
    color, dash, integer_ticks, is_plottable, legend_width, padded, range, ticks, value, Anchor,
    Area, Axis, Canvas, Key, Scale, Stroke, Swatch, FONT,
};

/// Points of one line drawn at most; longer series keep every k-th point and their last.
const MAX_LINE_POINTS: usize = 1000;
/// Rows of mark labels above a plot.
const LABEL_ROWS: usize = 3;

/// Why a training stage stopped before its last epoch, as its lock report records it: each
/// training stage's report holds `stopped` — at its top (a model: its one phase), in each
/// entry of `phases` (fine-tuning: the entry's `phase`), or in each entry of `adapters` (the
/// entry's key is the modality, the subject of its history rows).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stop {
    pub(crate) phase: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) reason: String,
}

/// The stops a stage's lock report records.
pub(crate) fn stops(report: &BTreeMap<String, serde_json::Value>) -> Vec<Stop> {
    let reason = |v: &serde_json::Value| v.get("stopped")?.as_str().map(str::to_string);
    let mut out = Vec::new();
    if let Some(reason) = report.get("stopped").and_then(|v| v.as_str()) {
        out.push(Stop {
            phase: None,
            subject: None,
            reason: reason.to_string(),
        });
    }
    for entry in report
        .get("phases")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(phase), Some(reason)) =
            (entry.get("phase").and_then(|p| p.as_str()), reason(entry))
        {
            out.push(Stop {
                phase: Some(phase.to_string()),
                subject: None,
                reason,
            });
        }
    }
    for (key, entry) in report
        .get("adapters")
        .and_then(|a| a.as_object())
        .into_iter()
        .flatten()
    {
        if let Some(reason) = reason(entry) {
            out.push(Stop {
                phase: None,
                subject: Some(key.clone()),
                reason,
            });
        }
    }
    out
}

/// Where each phase's epochs lie on the x axis: phases one after the other, in order of first
/// appearance.
struct Timeline {
    /// Phase, its offset, its first and last epoch.
    phases: Vec<(String, u64, u32, u32)>,
}

impl Timeline {
    fn of(rows: &[HistoryRow]) -> Timeline {
        let mut phases: Vec<(String, u64, u32, u32)> = Vec::new();
        for r in rows {
            match phases.iter_mut().find(|p| p.0 == r.phase) {
                Some(p) => {
                    p.2 = p.2.min(r.epoch);
                    p.3 = p.3.max(r.epoch);
                }
                None => phases.push((r.phase.clone(), 0, r.epoch, r.epoch)),
            }
        }
        let mut next = 0u64;
        for p in &mut phases {
            p.1 = next;
            next += u64::from(p.3) + 1;
        }
        Timeline { phases }
    }

    /// The index of `phase`.
    fn index(&self, phase: &str) -> usize {
        self.phases.iter().position(|p| p.0 == phase).unwrap_or(0)
    }

    /// The x of `epoch` of `phase`.
    fn x(&self, phase: &str, epoch: u32) -> f64 {
        let offset = self.phases.iter().find(|p| p.0 == phase).map_or(0, |p| p.1);
        (offset + u64::from(epoch)) as f64
    }

    fn last_phase(&self) -> Option<&str> {
        self.phases.last().map(|p| p.0.as_str())
    }
}

/// A point of a line, with its tooltip; lines break between phases.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    x: f64,
    y: f64,
    phase: usize,
    tip: String,
}

/// One line of a plot.
#[derive(Debug, Clone)]
struct Line {
    label: String,
    color: &'static str,
    dash: Option<&'static str>,
    width: f64,
    points: Vec<Point>,
}

/// A vertical mark: the best epoch, an early stop, a learning-rate change or a phase's start.
#[derive(Debug, Clone, PartialEq)]
struct Mark {
    x: f64,
    label: String,
    tip: String,
    kind: MarkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MarkKind {
    Phase,
    Best,
    Stopped,
    LearningRate,
}

impl MarkKind {
    fn stroke(self) -> Stroke<'static> {
        let (color, dash) = match self {
            MarkKind::Phase => ("#999999", None),
            MarkKind::Best => ("#222222", Some("5 3")),
            MarkKind::Stopped => ("#d62728", Some("2 3")),
            MarkKind::LearningRate => ("#8c564b", Some("1 3")),
        };
        Stroke {
            color,
            width: 1.3,
            dash,
        }
    }

    fn key(self) -> Option<Key> {
        let label = match self {
            MarkKind::Phase => return None,
            MarkKind::Best => "best epoch (weights kept)",
            MarkKind::Stopped => "stopped early",
            MarkKind::LearningRate => "learning-rate change",
        };
        let stroke = self.stroke();
        Some(Key {
            label: label.into(),
            swatch: Swatch::Line {
                color: stroke.color,
                dash: stroke.dash,
                width: stroke.width,
            },
        })
    }
}

/// The learning-curve part of one training stage: its heading, the plot (unless no loss value
/// is finite), and notes: values left out, series drawn once, best epochs and stops.
pub(crate) fn learning_curves(
    id: &str,
    kind: &str,
    rows: &[HistoryRow],
    stopped: &[Stop],
    level: u8,
) -> Vec<Block> {
    let mut blocks = vec![Block::Heading(level, format!("{id} ({kind})"))];
    let timeline = Timeline::of(rows);
    let (lines, left_out, merged) = loss_lines(rows, &timeline);
    if lines.is_empty() {
        tracing::warn!("stage `{id}`: no finite loss value was recorded: no learning-curve plot");
        blocks.push(Block::Text(Text::plain(
            "No finite loss value was recorded: no learning-curve plot.",
        )));
    } else {
        let marks = marks(rows, &timeline, stopped);
        blocks.push(Block::Figure(Figure {
            name: vec![id.to_string(), "curves".into()],
            alt: format!("learning curves of {id}"),
            svg: chart(&format!("{id} ({kind}): loss per epoch"), &lines, &marks),
        }));
        if left_out > 0 {
            tracing::warn!(
                "stage `{id}`: {left_out} non-finite loss value(s) left out of the plot"
            );
            blocks.push(Block::Text(Text::plain(format!(
                "{left_out} non-finite loss value(s) left out of the plot."
            ))));
        }
        for same in merged {
            blocks.push(Block::Text(Text::plain(format!(
                "{}: the same values, drawn as one line.",
                same.join(" = ")
            ))));
        }
    }
    blocks.push(Block::Text(best_and_stops(rows, &timeline, stopped)));
    blocks
}

/// Subjects of the loss rows, `total` first.
fn loss_subjects(rows: &[HistoryRow]) -> Vec<&str> {
    let subjects: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.metric == Measure::Loss.key())
        .map(|r| r.subject.as_str())
        .collect();
    let mut ordered: Vec<&str> = subjects.iter().copied().filter(|s| *s == TOTAL).collect();
    ordered.extend(subjects.iter().copied().filter(|s| *s != TOTAL));
    ordered
}

/// Which value of a row.
#[derive(Debug, Clone, Copy)]
enum Split {
    Train,
    Valid,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
        }
    }

    fn of(self, row: &HistoryRow) -> Option<f64> {
        match self {
            Split::Train => row.train,
            Split::Valid => row.valid,
        }
    }
}

/// The points of `subject`'s loss on `split`, and how many values could not be drawn.
fn points(
    rows: &[HistoryRow],
    timeline: &Timeline,
    subject: &str,
    split: Split,
    label: &str,
) -> (Vec<Point>, usize) {
    let mut left_out = 0;
    let mut points = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.metric == Measure::Loss.key() && r.subject == subject)
    {
        let Some(y) = split.of(r) else { continue };
        if !is_plottable(y) {
            left_out += 1;
            continue;
        }
        points.push(Point {
            x: timeline.x(&r.phase, r.epoch),
            y,
            phase: timeline.index(&r.phase),
            tip: format!(
                "{label}: {} · phase {} epoch {}{} · lr {}",
                value(y),
                r.phase,
                r.epoch,
                if r.epoch == 0 {
                    " (before training)"
                } else {
                    ""
                },
                learning_rate(r.lr)
            ),
        });
    }
    (thin(points), left_out)
}

/// At most [`MAX_LINE_POINTS`] points: every k-th, and the last.
fn thin(points: Vec<Point>) -> Vec<Point> {
    if points.len() <= MAX_LINE_POINTS {
        return points;
    }
    let k = points.len().div_ceil(MAX_LINE_POINTS);
    let last = points.len() - 1;
    points
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % k == 0 || *i == last)
        .map(|(_, p)| p)
        .collect()
}

/// The train and validation loss lines of every subject (a subject's colour, train dashed),
/// how many values were left out, and the labels of lines drawn once because their values are
/// the same (a one-head model's head loss is its total loss).
fn loss_lines(rows: &[HistoryRow], timeline: &Timeline) -> (Vec<Line>, usize, Vec<Vec<String>>) {
    let mut lines: Vec<Line> = Vec::new();
    let mut same: Vec<Vec<String>> = Vec::new();
    let mut left_out = 0;
    for (i, subject) in loss_subjects(rows).into_iter().enumerate() {
        for split in [Split::Valid, Split::Train] {
            let label = format!("{subject} {}", split.name());
            let (points, skipped) = points(rows, timeline, subject, split, &label);
            left_out += skipped;
            if points.is_empty() {
                continue;
            }
            let equal = |a: &[Point], b: &[Point]| {
                a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.x == q.x && p.y == q.y)
            };
            if let Some(k) = lines.iter().position(|l| equal(&l.points, &points)) {
                match same.iter_mut().find(|s| s[0] == lines[k].label) {
                    Some(s) => s.push(label.clone()),
                    None => same.push(vec![lines[k].label.clone(), label.clone()]),
                }
                lines[k].label = format!("{} = {label}", lines[k].label);
                continue;
            }
            let (dash, width) = match split {
                Split::Valid => (None, 2.0),
                Split::Train => (Some("6 3"), 1.5),
            };
            lines.push(Line {
                label,
                color: color(i),
                dash,
                width,
                points,
            });
        }
    }
    (lines, left_out, same)
}

/// The marks of a history: phase starts (several phases), each phase's best epoch (per
/// subject where subjects were trained apart), its early stop and each learning-rate change.
fn marks(rows: &[HistoryRow], timeline: &Timeline, stopped: &[Stop]) -> Vec<Mark> {
    let mut marks = Vec::new();
    if timeline.phases.len() > 1 {
        for (phase, offset, first, _) in &timeline.phases {
            marks.push(Mark {
                x: (*offset + u64::from(*first)) as f64 - 0.5,
                label: phase.clone(),
                tip: format!("phase {phase}"),
                kind: MarkKind::Phase,
            });
        }
    }
    for (phase, epochs) in best_epochs(rows) {
        let several = epochs.len() > 1;
        for (epoch, subjects) in epochs {
            let x = timeline.x(&phase, epoch);
            let whose = if several {
                format!(" {}", subjects.join(", "))
            } else {
                String::new()
            };
            marks.push(Mark {
                x,
                label: format!("best{whose}"),
                tip: format!("phase {phase}: best epoch {epoch}{whose} (its weights kept)"),
                kind: MarkKind::Best,
            });
        }
    }
    for stop in stopped {
        if let Some(x) = stop_x(rows, timeline, stop) {
            marks.push(Mark {
                x,
                label: "stopped".into(),
                tip: stop.reason.clone(),
                kind: MarkKind::Stopped,
            });
        }
    }
    marks.extend(learning_rate_changes(rows, timeline));
    marks.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.kind.cmp(&b.kind)));
    marks.dedup_by(|a, b| a.x == b.x && a.kind == b.kind && a.label == b.label);
    marks
}

/// Per phase, the best epochs with the subjects whose best they are.
fn best_epochs(rows: &[HistoryRow]) -> Vec<(String, BTreeMap<u32, Vec<String>>)> {
    let mut out: Vec<(String, BTreeMap<u32, Vec<String>>)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.is_best && r.metric == Measure::Loss.key())
    {
        let at = match out.iter().position(|(p, _)| *p == r.phase) {
            Some(i) => i,
            None => {
                out.push((r.phase.clone(), BTreeMap::new()));
                out.len() - 1
            }
        };
        let subjects = out[at].1.entry(r.epoch).or_default();
        if !subjects.contains(&r.subject) {
            subjects.push(r.subject.clone());
        }
    }
    // A subject trained with the others (a head, `total`) shares their best epoch: one mark.
    for (_, epochs) in &mut out {
        if epochs.len() == 1 {
            for subjects in epochs.values_mut() {
                subjects.clear();
            }
        }
    }
    out
}

/// Where a stop is drawn: the last epoch of its phase (of its subject, if it names one).
fn stop_x(rows: &[HistoryRow], timeline: &Timeline, stop: &Stop) -> Option<f64> {
    let phase = stop.phase.as_deref().or(timeline.last_phase())?;
    let last = rows
        .iter()
        .filter(|r| r.phase == phase)
        .filter(|r| stop.subject.as_ref().is_none_or(|s| *s == r.subject))
        .map(|r| r.epoch)
        .max()?;
    Some(timeline.x(phase, last))
}

/// A learning rate as the notes show it: `1e-3`, `2.5e-4`.
fn learning_rate(lr: f64) -> String {
    format!("{lr:e}")
}

/// The epochs whose learning rate differs from the epoch's before (within a phase, or from
/// the last epoch of the phase before).
fn learning_rate_changes(rows: &[HistoryRow], timeline: &Timeline) -> Vec<Mark> {
    let mut by_x: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for r in rows {
        by_x.entry(timeline.x(&r.phase, r.epoch) as i64)
            .or_insert((timeline.x(&r.phase, r.epoch), r.lr));
    }
    let mut marks = Vec::new();
    let mut before: Option<f64> = None;
    for (x, lr) in by_x.into_values() {
        if let Some(old) = before.filter(|old| *old != lr) {
            marks.push(Mark {
                x,
                label: format!("lr {}", learning_rate(lr)),
                tip: format!(
                    "learning rate {} → {}",
                    learning_rate(old),
                    learning_rate(lr)
                ),
                kind: MarkKind::LearningRate,
            });
        }
        before = Some(lr);
    }
    marks
}

/// A line naming the best epoch of each phase and why training stopped early.
fn best_and_stops(rows: &[HistoryRow], timeline: &Timeline, stopped: &[Stop]) -> Text {
    let mut text = Text::default();
    let best = best_epochs(rows);
    for (i, (phase, _, _, _)) in timeline.phases.iter().enumerate() {
        if i > 0 {
            text = text.and("; ");
        }
        let epochs = best
            .iter()
            .find(|(p, _)| p == phase)
            .map(|(_, e)| {
                e.iter()
                    .map(|(epoch, subjects)| {
                        if subjects.is_empty() {
                            epoch.to_string()
                        } else {
                            format!("{epoch} ({})", subjects.join(", "))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "none".into());
        text = text
            .and("phase ")
            .code(phase)
            .and(format!(": best epoch {epochs}"));
    }
    for stop in stopped {
        text = text.and(". Stopped");
        if let Some(phase) = &stop.phase {
            text = text.and(" (phase ").code(phase).and(")");
        }
        if let Some(subject) = &stop.subject {
            text = text.and(" (").code(subject).and(")");
        }
        text = text.and(format!(": {}", stop.reason));
    }
    text
}

/// The plot of `lines` with `marks`: epochs on a whole-number axis, the legend to the right of
/// the plot area, mark labels above it.
fn chart(title: &str, lines: &[Line], marks: &[Mark]) -> String {
    let mut keys: Vec<Key> = lines
        .iter()
        .map(|l| Key {
            label: l.label.clone(),
            swatch: Swatch::Line {
                color: l.color,
                dash: l.dash,
                width: l.width,
            },
        })
        .collect();
    let kinds: BTreeSet<MarkKind> = marks.iter().map(|m| m.kind).collect();
    keys.extend(kinds.into_iter().filter_map(MarkKind::key));
    let width = 600.0 + legend_width(&keys);
    let height = (110.0 + keys.len() as f64 * 18.0).max(400.0);
    let area = Area {
        left: 66.0,
        top: 34.0 + LABEL_ROWS as f64 * 14.0,
        right: 580.0,
        bottom: height - 50.0,
    };
    let xs = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.x))
        .chain(marks.iter().map(|m| m.x));
    let (x0, x1) = range(xs).unwrap_or((0.0, 1.0));
    let x = Scale::new((x0 - 0.5, x1 + 0.5), area.left, area.right);
    let y_range = range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.y)))
        .map(|(lo, hi)| padded(lo, hi))
        .unwrap_or((0.0, 1.0));
    let y = Scale::new(y_range, area.bottom, area.top);
    let mut svg = Canvas::new(width, height, title);
    svg.styled_text(
        area.left,
        18.0,
        Anchor::Start,
        r#"font-weight="bold""#,
        title,
    );
    svg.axes(
        area,
        &Axis {
            scale: x,
            ticks: integer_ticks(x.domain(), 10),
            title: "epoch (phases one after the other)".into(),
        },
        &Axis {
            scale: y,
            ticks: ticks(y.domain(), 6),
            title: "loss".into(),
        },
    );
    draw_marks(&mut svg, area, &x, marks);
    svg.open("data");
    for line in lines {
        let stroke = Stroke {
            color: line.color,
            width: line.width,
            dash: line.dash,
        };
        let pixels: Vec<(f64, f64)> = line.points.iter().map(|p| (x.at(p.x), y.at(p.y))).collect();
        draw_line(&mut svg, line, &pixels, stroke);
        for (p, &at) in line.points.iter().zip(&pixels) {
            svg.dot(at, 2.6, line.color, "", Some(&p.tip));
        }
    }
    for mark in marks.iter().filter(|m| m.kind == MarkKind::Best) {
        for line in lines.iter().filter(|l| l.dash.is_none()) {
            if let Some(p) = line.points.iter().find(|p| p.x == mark.x) {
                svg.dot(
                    (x.at(p.x), y.at(p.y)),
                    6.0,
                    "none",
                    &format!(r#"stroke="{}" stroke-width="1.5""#, line.color),
                    Some(&format!("{} · {}", mark.tip, p.tip)),
                );
            }
        }
    }
    svg.close();
    svg.legend(area.right + 24.0, area.top + 4.0, &keys);
    svg.finish()
}

/// A line through its points' `pixels`, one polyline per phase.
fn draw_line(svg: &mut Canvas, line: &Line, pixels: &[(f64, f64)], stroke: Stroke<'_>) {
    let mut start = 0;
    for end in 1..=pixels.len() {
        if end == pixels.len() || line.points[end].phase != line.points[start].phase {
            svg.polyline(&pixels[start..end], stroke);
            start = end;
        }
    }
}

/// Vertical marks across the plot area, their labels in rows above it (a label goes to the
/// first row where it overlaps no other).
fn draw_marks(svg: &mut Canvas, area: Area, x: &Scale, marks: &[Mark]) {
    svg.open("marks");
    let mut rows: Vec<Vec<(f64, f64)>> = vec![Vec::new(); LABEL_ROWS];
    for mark in marks {
        let at = x.at(mark.x);
        svg.line((at, area.top), (at, area.bottom), mark.kind.stroke());
        let width = mark.label.chars().count() as f64 * FONT * 0.6;
        let (start, end) = (at - width / 2.0, at + width / 2.0);
        let Some(row) = rows
            .iter()
            .position(|taken| taken.iter().all(|&(a, b)| end + 4.0 < a || start - 4.0 > b))
        else {
            continue;
        };
        rows[row].push((start, end));
        let y = area.top - 6.0 - row as f64 * 14.0;
        svg.styled_text(
            at,
            y,
            Anchor::Middle,
            &format!(r#"fill="{}""#, mark.kind.stroke().color),
            &mark.label,
        );
    }
    svg.close();
}

/// One run's history in an overlay: its name, its group (colour) and its rows.
pub(crate) struct Overlaid<'a> {
    pub(crate) run: &'a str,
    pub(crate) group: usize,
    pub(crate) rows: &'a [HistoryRow],
}

/// The subjects worth overlaying for a stage: each subject with a validation loss, but not one
/// whose values are its runs' `total` values (a one-head model's head).
pub(crate) fn overlay_subjects(runs: &[Overlaid<'_>]) -> Vec<String> {
    let mut subjects: Vec<String> = Vec::new();
    for run in runs {
        for s in loss_subjects(run.rows) {
            if !subjects.iter().any(|t| t == s) {
                subjects.push(s.to_string());
            }
        }
    }
    subjects
        .into_iter()
        .filter(|s| {
            s == TOTAL
                || runs.iter().any(|run| {
                    let timeline = Timeline::of(run.rows);
                    let mine = points(run.rows, &timeline, s, Split::Valid, "").0;
                    let total = points(run.rows, &timeline, TOTAL, Split::Valid, "").0;
                    mine.len() != total.len()
                        || mine
                            .iter()
                            .zip(&total)
                            .any(|(a, b)| a.x != b.x || a.y != b.y)
                })
        })
        .collect()
}

/// Each run's validation loss of `subject` as a line coloured by its group, and its best
/// epoch's point with that colour.
fn overlay_lines(subject: &str, runs: &[Overlaid<'_>]) -> (Vec<Line>, Vec<(&'static str, Point)>) {
    let mut lines = Vec::new();
    let mut best = Vec::new();
    for run in runs {
        let timeline = Timeline::of(run.rows);
        let (points, _) = points(run.rows, &timeline, subject, Split::Valid, run.run);
        if points.is_empty() {
            continue;
        }
        for r in run
            .rows
            .iter()
            .filter(|r| r.is_best && r.subject == subject && r.metric == Measure::Loss.key())
        {
            if let Some(p) = points.iter().find(|p| p.x == timeline.x(&r.phase, r.epoch)) {
                best.push((color(run.group), p.clone()));
            }
        }
        lines.push(Line {
            label: run.run.to_string(),
            color: color(run.group),
            dash: dash(run.group),
            width: 1.5,
            points,
        });
    }
    (lines, best)
}

/// One key per group of the runs (named by `labels`), and the best-epoch dot's.
fn overlay_keys(runs: &[Overlaid<'_>], labels: &[String]) -> Vec<Key> {
    let groups: BTreeSet<usize> = runs.iter().map(|r| r.group).collect();
    groups
        .iter()
        .map(|&g| Key {
            label: labels.get(g).cloned().unwrap_or_else(|| format!("#{g}")),
            swatch: Swatch::Line {
                color: color(g),
                dash: dash(g),
                width: 2.0,
            },
        })
        .chain(std::iter::once(Key {
            label: "best epoch of a run".into(),
            swatch: Swatch::Dot { color: "#444444" },
        }))
        .collect()
}

/// The validation loss of `subject` in each run, one line per run coloured by its group
/// (`labels` names each group), the best epoch of each run a dot; `None` when no run has a
/// finite value.
pub(crate) fn overlay(
    stage: &str,
    subject: &str,
    runs: &[Overlaid<'_>],
    labels: &[String],
) -> Option<Figure> {
    let (lines, best) = overlay_lines(subject, runs);
    if lines.is_empty() {
        return None;
    }
    let keys = overlay_keys(runs, labels);
    let title = format!("{stage}: {subject} validation loss, one line per run");
    let width = 600.0 + legend_width(&keys);
    let height = (110.0 + keys.len() as f64 * 18.0).max(380.0);
    let area = Area {
        left: 66.0,
        top: 40.0,
        right: 580.0,
        bottom: height - 50.0,
    };
    let (x0, x1) = range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.x)))?;
    let x = Scale::new((x0 - 0.5, x1 + 0.5), area.left, area.right);
    let (y0, y1) = range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.y)))?;
    let y = Scale::new(padded(y0, y1), area.bottom, area.top);
    let mut svg = Canvas::new(width, height, &title);
    svg.styled_text(
        area.left,
        18.0,
        Anchor::Start,
        r#"font-weight="bold""#,
        &title,
    );
    svg.axes(
        area,
        &Axis {
            scale: x,
            ticks: integer_ticks(x.domain(), 10),
            title: "epoch (phases one after the other)".into(),
        },
        &Axis {
            scale: y,
            ticks: ticks(y.domain(), 6),
            title: format!("{subject} validation loss"),
        },
    );
    svg.open("data");
    for line in &lines {
        let pixels: Vec<(f64, f64)> = line.points.iter().map(|p| (x.at(p.x), y.at(p.y))).collect();
        draw_line(
            &mut svg,
            line,
            &pixels,
            Stroke {
                color: line.color,
                width: line.width,
                dash: line.dash,
            },
        );
        for (p, &at) in line.points.iter().zip(&pixels) {
            svg.dot(at, 2.0, line.color, r#"opacity="0.8""#, Some(&p.tip));
        }
    }
    for (fill, p) in &best {
        svg.dot(
            (x.at(p.x), y.at(p.y)),
            4.5,
            fill,
            r##"stroke="#222222" stroke-width="1""##,
            Some(&format!("best epoch · {}", p.tip)),
        );
    }
    svg.close();
    svg.legend(area.right + 24.0, area.top + 4.0, &keys);
    Some(Figure {
        name: vec![stage.to_string(), subject.to_string(), "overlay".into()],
        alt: format!("{subject} validation loss of {stage}, one line per run"),
        svg: svg.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(phase: &str, epoch: u32, subject: &str, train: f64, valid: f64) -> HistoryRow {
        HistoryRow {
            phase: phase.into(),
            epoch,
            lr: 1e-3,
            subject: subject.into(),
            metric: "loss".into(),
            train: Some(train),
            valid: Some(valid),
            is_best: false,
        }
    }

    #[test]
    fn non_finite_losses_are_left_out_and_counted() {
        let rows = [
            row("train", 1, "model", f64::NAN, 1.0),
            row("train", 2, "model", 0.5, f64::INFINITY),
            row("train", 3, "model", 0.4, 0.9),
        ];
        let (lines, left_out, _) = loss_lines(&rows, &Timeline::of(&rows));
        assert_eq!(left_out, 2);
        assert_eq!(lines.len(), 2);
        let all_nan = [
            row("train", 0, "model", f64::NAN, f64::NAN),
            row("train", u32::MAX, "model", f64::NAN, f64::NEG_INFINITY),
        ];
        let (lines, left_out, _) = loss_lines(&all_nan, &Timeline::of(&all_nan));
        assert!(lines.is_empty());
        assert_eq!(left_out, 4);
        let blocks = learning_curves("m", "train_model", &all_nan, &[], 3);
        assert!(!blocks.iter().any(|b| matches!(b, Block::Figure(_))));
    }

    #[test]
    fn a_head_equal_to_the_total_is_drawn_once_with_a_note() {
        let mut rows = Vec::new();
        for e in 1..=3 {
            let v = 1.0 / f64::from(e);
            rows.push(row("train", e, TOTAL, v + 0.1, v));
            rows.push(row("train", e, "sentiment", v + 0.2, v));
        }
        let (lines, _, same) = loss_lines(&rows, &Timeline::of(&rows));
        let labels: Vec<&str> = lines.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "total valid = sentiment valid",
                "total train",
                "sentiment train"
            ]
        );
        assert_eq!(same, [vec!["total valid", "sentiment valid"]]);
    }

    #[test]
    fn best_epochs_stops_and_learning_rate_changes_are_marked_per_phase() {
        let mut rows = Vec::new();
        for (phase, epochs, best, lr) in [("frozen", 0..=4, 2, 1e-3), ("all", 0..=3, 3, 1e-4)] {
            for e in epochs {
                let mut r = row(phase, e, TOTAL, 1.0, 1.0 / f64::from(e + 1));
                r.is_best = e == best;
                r.lr = if phase == "frozen" && e >= 3 {
                    lr / 2.0
                } else {
                    lr
                };
                rows.push(r);
            }
        }
        let timeline = Timeline::of(&rows);
        assert_eq!(timeline.x("all", 0), 5.0);
        let stopped = stops(
            &serde_json::from_str(
                r#"{"phases": [{"phase": "frozen", "stopped": "early stopping after epoch 4"}, {"phase": "all", "stopped": null}]}"#,
            )
            .unwrap(),
        );
        assert_eq!(stopped.len(), 1);
        let marks = marks(&rows, &timeline, &stopped);
        let shown: Vec<(f64, &str, MarkKind)> = marks
            .iter()
            .map(|m| (m.x, m.label.as_str(), m.kind))
            .collect();
        assert_eq!(
            shown,
            [
                (-0.5, "frozen", MarkKind::Phase),
                (2.0, "best", MarkKind::Best),
                (3.0, "lr 5e-4", MarkKind::LearningRate),
                (4.0, "stopped", MarkKind::Stopped),
                (4.5, "all", MarkKind::Phase),
                (5.0, "lr 1e-4", MarkKind::LearningRate),
                (8.0, "best", MarkKind::Best),
            ]
        );
        let text = best_and_stops(&rows, &timeline, &stopped);
        assert_eq!(
            text,
            Text::plain("phase ")
                .code("frozen")
                .and(": best epoch 2")
                .and("; ")
                .and("phase ")
                .code("all")
                .and(": best epoch 3")
                .and(". Stopped")
                .and(" (phase ")
                .code("frozen")
                .and(")")
                .and(": early stopping after epoch 4")
        );
    }

    #[test]
    fn stops_are_read_where_each_training_stage_records_them() {
        let report: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"best_epoch": 7, "stopped": "early stopping after epoch 12",
                "adapters": {"visual": {"best_epoch": 3, "stopped": "NaN loss at epoch 4, batch 1"},
                "audio": {"best_epoch": 3, "stopped": null}}}"#,
        )
        .unwrap();
        let found = stops(&report);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].reason, "early stopping after epoch 12");
        assert_eq!(found[1].subject.as_deref(), Some("visual"));
    }

    #[test]
    fn the_chart_has_an_integer_epoch_axis_and_the_legend_beside_the_plot() {
        let mut rows = Vec::new();
        for e in 1..=12 {
            let mut r = row(
                "train",
                e,
                TOTAL,
                1.0 / f64::from(e),
                0.5 + f64::from(e % 5) / 10.0,
            );
            r.is_best = e == 7;
            rows.push(r);
        }
        let blocks = learning_curves("m", "train_model", &rows, &[], 3);
        let Some(Block::Figure(figure)) = blocks.get(1) else {
            panic!("no figure")
        };
        assert!(figure.svg.contains(">12</text>") && !figure.svg.contains(">2.0</text>"));
        assert!(figure.svg.contains("best epoch 7"));
        assert!(figure.svg.contains("class=\"legend\"") && figure.svg.contains("class=\"data\""));
        let (thinned, total) = (
            thin(
                (0..2500)
                    .map(|i| Point {
                        x: f64::from(i),
                        y: 0.0,
                        phase: 0,
                        tip: String::new(),
                    })
                    .collect(),
            ),
            2500,
        );
        assert!(
            thinned.len() <= MAX_LINE_POINTS + 1
                && thinned.last().unwrap().x == f64::from(total - 1)
        );
    }
}
