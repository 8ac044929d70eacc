//! The report as Markdown: `report.md`, each plot an SVG file beside it.

use super::page::{Block, Cell, Page, Span, Table, Text};

/// The Markdown file of a report.
pub const MARKDOWN: &str = "report.md";

/// The files of the report: each plot, then `report.md`, as (name, contents).
pub(crate) fn render(page: &Page) -> Vec<(String, String)> {
    let mut md = format!("# {}\n\n", one_line(&page.title));
    let mut files = Vec::new();
    let mut names = PlotNames::default();
    blocks(&mut md, &mut files, &mut names, &page.blocks);
    files.push((MARKDOWN.to_string(), md));
    files
}

fn blocks(
    md: &mut String,
    files: &mut Vec<(String, String)>,
    names: &mut PlotNames,
    blocks: &[Block],
) {
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                md.push_str(&format!(
                    "{} {}\n\n",
                    "#".repeat(usize::from(*level)),
                    one_line(text)
                ));
            }
            Block::Text(text) => md.push_str(&format!("{}\n\n", spans(text))),
            Block::List(items) => {
                for item in items {
                    md.push_str(&format!("- {}\n", spans(item)));
                }
                md.push('\n');
            }
            Block::Table(table) => md.push_str(&self::table(table)),
            Block::Figure(figure) => {
                let parts: Vec<&str> = figure.name.iter().map(String::as_str).collect();
                let file = names.next(&parts);
                md.push_str(&format!("![{}]({file})\n\n", one_line(&figure.alt)));
                files.push((file, figure.svg.clone()));
            }
            Block::Code(code) => {
                let fence = "`".repeat(longest_run(code, '`').max(2) + 1);
                md.push_str(&format!("{fence}\n{}\n{fence}\n\n", code.trim_end()));
            }
            Block::Cards(cards) => {
                for card in cards {
                    md.push_str(&format!("#### {}\n\n", one_line(&card.title)));
                    self::blocks(md, files, names, &card.blocks);
                }
            }
            Block::Details(summary, inner) => {
                md.push_str(&format!("### {}\n\n", one_line(summary)));
                self::blocks(md, files, names, inner);
            }
        }
    }
}

/// A table, with the file its values come from below it.
fn table(table: &Table) -> String {
    let mut md = format!(
        "| {} |\n|{}\n",
        table
            .header
            .iter()
            .map(|h| cell_text(h))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(table.header.len())
    );
    for row in &table.rows {
        let cells: Vec<String> = row.iter().map(shown).collect();
        md.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    md.push('\n');
    if let Some(source) = &table.source {
        md.push_str(&format!(
            "{}\n\n",
            spans(&Text::plain("from ").code(source))
        ));
    }
    md
}

fn shown(cell: &Cell) -> String {
    let text = cell_text(&cell.text);
    if cell.strong && !text.is_empty() {
        format!("**{text}**")
    } else {
        text
    }
}

/// Text inside a table cell: one line, `|` escaped.
fn cell_text(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// Text on one line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn spans(text: &Text) -> String {
    text.0
        .iter()
        .map(|span| match span {
            Span::Plain(s) => one_line(s),
            Span::Code(s) => {
                let ticks = "`".repeat(longest_run(s, '`') + 1);
                let pad = if s.starts_with('`') || s.ends_with('`') {
                    " "
                } else {
                    ""
                };
                format!("{ticks}{pad}{}{pad}{ticks}", one_line(s))
            }
        })
        .collect()
}

/// The longest run of `c` in `text`.
fn longest_run(text: &str, c: char) -> usize {
    text.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// Plot file names: stage ids and heads come from the lock file and tables, so only letters,
/// digits, `_` and `-` are kept (no path can escape the report folder), and a clash gets a
/// number.
#[derive(Default)]
struct PlotNames {
    /// The names given so far.
    taken: Vec<String>,
}

impl PlotNames {
    /// A new file name `<parts joined by _>.svg`.
    fn next(&mut self, parts: &[&str]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::page::{Card, Figure};

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

    #[test]
    fn blocks_become_markdown_and_plots_files() {
        let figure = |name: &str| Figure {
            name: vec![name.into()],
            alt: "a plot".into(),
            svg: "<svg/>".into(),
        };
        let page = Page {
            title: "Run report: x".into(),
            blocks: vec![
                Block::Heading(2, "Results".into()),
                Block::Text(Text::plain("phase ").code("train").and(": best epoch 3")),
                Block::Table(Table {
                    header: vec!["a|b".into(), "n".into()],
                    rows: vec![vec![
                        Cell::text("x\ny"),
                        Cell {
                            strong: true,
                            ..Cell::numbers("3", vec![3.0])
                        },
                    ]],
                    source: Some("eval/metrics.parquet".into()),
                }),
                Block::Cards(vec![Card {
                    title: "eval".into(),
                    blocks: vec![Block::Figure(figure("p")), Block::Figure(figure("p"))],
                }]),
                Block::Code("a = \"```\"".into()),
            ],
        };
        let files = render(&page);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["p.svg", "p-2.svg", MARKDOWN]);
        let md = &files[2].1;
        for expected in [
            "# Run report: x\n",
            "## Results\n",
            "phase `train`: best epoch 3",
            "| a\\|b | n |\n|---|---|\n| x y | **3** |\n",
            "from `eval/metrics.parquet`",
            "#### eval\n\n![a plot](p.svg)\n\n![a plot](p-2.svg)",
            "````\na = \"```\"\n````",
        ] {
            assert!(md.contains(expected), "missing {expected:?} in:\n{md}");
        }
    }
}
