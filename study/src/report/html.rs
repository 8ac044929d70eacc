//! The report as one self-contained HTML file: the plots inline as SVG, the style and a few
//! lines of script inside the page, nothing fetched (its content security policy forbids any
//! load). The script sorts a table by the column whose header is clicked (numbers by their
//! exact value) and shows a point's values beside the pointer; without it the page reads the
//! same, with the values as the plots' tooltips.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::page::{Block, Cell, Page, Span, Table, Text};
use super::svg::escape;

/// The HTML file of a report.
pub const HTML: &str = "report.html";

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1320px; padding: 16px 24px 48px; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0.4em 0; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
h4 { font-size: 1em; margin: 0.3em 0 0.5em; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
pre { background: #f6f6f6; padding: 10px; overflow: auto; max-height: 480px; border-radius: 4px; }
pre code { background: none; padding: 0; }
nav.toc { font-size: 0.95em; }
nav.toc a { margin-right: 14px; }
div.table { overflow-x: auto; margin: 0.6em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td[data-v] { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f3f5f8; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " ▲"; }
th[aria-sort=descending]::after { content: " ▼"; }
tbody tr:nth-child(even) { background: #fafafa; }
td.best { font-weight: bold; }
p.source { color: #666; font-size: 0.85em; margin-top: 0; }
figure { margin: 0.6em 0; }
svg { max-width: 100%; height: auto; }
div.cards { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
section.card { border: 1px solid #d8d8d8; border-radius: 6px; padding: 6px 12px; max-width: 410px; box-sizing: border-box; }
details { border: 1px solid #e0e0e0; border-radius: 6px; padding: 4px 12px; margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
div.tip { position: absolute; display: none; background: #222; color: #fff; padding: 4px 8px; border-radius: 4px; font-size: 12px; pointer-events: none; white-space: pre; z-index: 10; }
"#;

const SCRIPT: &str = r#"
(() => {
  for (const table of document.querySelectorAll("table.sortable")) {
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((th, col) => {
      th.tabIndex = 0;
      const sort = () => {
        const up = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(h => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        const body = table.tBodies[0];
        const key = row => {
          const cell = row.cells[col];
          const v = cell && cell.dataset.v;
          return v === undefined ? null : parseFloat(v);
        };
        const rows = Array.from(body.rows);
        const numeric = rows.some(row => key(row) !== null);
        rows.sort((a, b) => {
          if (numeric) {
            const x = key(a), y = key(b);
            const missing = (x === null || isNaN(x)) - (y === null || isNaN(y));
            if (missing !== 0) return missing;
            return up ? x - y : y - x;
          }
          const c = a.cells[col].textContent.localeCompare(b.cells[col].textContent);
          return up ? c : -c;
        });
        body.append(...rows);
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", e => { if (e.key === "Enter") sort(); });
    });
  }
  const tip = document.createElement("div");
  tip.className = "tip";
  document.body.append(tip);
  for (const title of document.querySelectorAll("svg title")) {
    title.parentElement.dataset.tip = title.textContent;
    title.remove();
  }
  document.addEventListener("mouseover", e => {
    const target = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!target) { tip.style.display = "none"; return; }
    tip.textContent = target.dataset.tip;
    tip.style.left = (e.pageX + 14) + "px";
    tip.style.top = (e.pageY + 14) + "px";
    tip.style.display = "block";
  });
})();
"#;

/// The page as one HTML document.
pub(crate) fn render(page: &Page) -> String {
    let mut anchors = Anchors::default();
    let mut body = String::new();
    let mut toc = Vec::new();
    blocks(&mut body, &mut anchors, &mut toc, &page.blocks);
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"mmflow\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&page.title),
        escape(&page.title)
    );
    if toc.len() > 1 {
        html.push_str("<nav class=\"toc\">");
        for (id, title) in &toc {
            let _ = write!(html, "<a href=\"#{id}\">{}</a>", escape(title));
        }
        html.push_str("</nav>\n");
    }
    html.push_str(&body);
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    html
}

fn blocks(
    html: &mut String,
    anchors: &mut Anchors,
    toc: &mut Vec<(String, String)>,
    blocks: &[Block],
) {
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                let id = anchors.next(text);
                if *level == 2 {
                    toc.push((id.clone(), text.clone()));
                }
                let level = (*level).clamp(2, 6);
                let _ = writeln!(html, "<h{level} id=\"{id}\">{}</h{level}>", escape(text));
            }
            Block::Text(text) => {
                let _ = writeln!(html, "<p>{}</p>", spans(text));
            }
            Block::List(items) => {
                html.push_str("<ul>\n");
                for item in items {
                    let _ = writeln!(html, "<li>{}</li>", spans(item));
                }
                html.push_str("</ul>\n");
            }
            Block::Table(t) => table(html, t),
            Block::Figure(figure) => {
                let _ = writeln!(html, "<figure>\n{}</figure>", figure.svg);
            }
            Block::Code(code) => {
                let _ = writeln!(html, "<pre><code>{}</code></pre>", escape(code.trim_end()));
            }
            Block::Cards(cards) => {
                html.push_str("<div class=\"cards\">\n");
                for card in cards {
                    let _ = writeln!(
                        html,
                        "<section class=\"card\">\n<h4>{}</h4>",
                        escape(&card.title)
                    );
                    self::blocks(html, anchors, toc, &card.blocks);
                    html.push_str("</section>\n");
                }
                html.push_str("</div>\n");
            }
            Block::Details(summary, inner) => {
                let _ = writeln!(html, "<details>\n<summary>{}</summary>", escape(summary));
                self::blocks(html, anchors, toc, inner);
                html.push_str("</details>\n");
            }
        }
    }
}

/// A sortable table; each number it shows is in its cell's `data-v` (every digit), the file
/// its values come from in the table's `data-source`.
fn table(html: &mut String, table: &Table) {
    html.push_str("<div class=\"table\"><table class=\"sortable\"");
    if let Some(source) = &table.source {
        let _ = write!(html, " data-source=\"{}\"", escape(source));
    }
    html.push_str(">\n<thead><tr>");
    for h in &table.header {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        html.push_str("<tr>");
        for cell in row {
            html.push_str(&td(cell));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table></div>\n");
    if let Some(source) = &table.source {
        let _ = writeln!(
            html,
            "<p class=\"source\">from <code>{}</code></p>",
            escape(source)
        );
    }
}

fn td(cell: &Cell) -> String {
    let mut attributes = String::new();
    if !cell.numbers.is_empty() {
        let numbers: Vec<String> = cell.numbers.iter().map(|n| n.to_string()).collect();
        let _ = write!(attributes, " data-v=\"{}\"", numbers.join(" "));
    }
    if cell.strong {
        attributes.push_str(" class=\"best\"");
    }
    format!("<td{attributes}>{}</td>", escape(&cell.text))
}

fn spans(text: &Text) -> String {
    text.0
        .iter()
        .map(|span| match span {
            Span::Plain(s) => escape(s),
            Span::Code(s) => format!("<code>{}</code>", escape(s)),
        })
        .collect()
}

/// Heading anchors: letters, digits and `-` of the heading, unique in the page.
#[derive(Default)]
struct Anchors {
    taken: BTreeSet<String>,
}

impl Anchors {
    fn next(&mut self, text: &str) -> String {
        let mut stem = String::new();
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                stem.push(c);
            } else if !stem.ends_with('-') {
                stem.push('-');
            }
        }
        let mut stem = stem.trim_matches('-').chars().take(60).collect::<String>();
        if stem.is_empty() {
            stem.push_str("section");
        }
        let mut id = stem.clone();
        let mut n = 2;
        while self.taken.contains(&id) {
            id = format!("{stem}-{n}");
            n += 1;
        }
        self.taken.insert(id.clone());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::page::Figure;

    #[test]
    fn a_page_is_one_escaped_document_with_exact_numbers() {
        let page = Page {
            title: "Run report: <demo>".into(),
            blocks: vec![
                Block::Heading(2, "Results".into()),
                Block::Heading(2, "Results".into()),
                Block::Text(Text::plain("a & b ").code("<x>")),
                Block::Table(Table {
                    header: vec!["metric".into(), "value".into()],
                    rows: vec![vec![
                        Cell::text("CCC"),
                        Cell::numbers("0.892", vec![0.892_345_678_9, 0.1]),
                    ]],
                    source: Some("eval/metrics.parquet".into()),
                }),
                Block::Figure(Figure {
                    name: vec!["p".into()],
                    alt: "p".into(),
                    svg: "<svg></svg>\n".into(),
                }),
                Block::Details("run \"a\"".into(), vec![Block::Code("x = '<'".into())]),
            ],
        };
        let html = render(&page);
        for expected in [
            "<title>Run report: &lt;demo&gt;</title>",
            "default-src 'none'",
            "<a href=\"#results\">Results</a><a href=\"#results-2\">Results</a>",
            "<h2 id=\"results-2\">",
            "<p>a &amp; b <code>&lt;x&gt;</code></p>",
            "<table class=\"sortable\" data-source=\"eval/metrics.parquet\">",
            "<td data-v=\"0.8923456789 0.1\">0.892</td>",
            "<figure>\n<svg></svg>\n</figure>",
            "<summary>run &quot;a&quot;</summary>",
            "<pre><code>x = &#39;&lt;&#39;</code></pre>",
        ] {
            assert!(html.contains(expected), "missing {expected:?} in:\n{html}");
        }
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
        assert_eq!(html, render(&page), "the same page gives the same bytes");
    }
}
