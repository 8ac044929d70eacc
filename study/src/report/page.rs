//! The report as a document, before it is written: headings, text, tables, plots, cards side
//! by side and collapsible parts. `markdown.rs` writes it as `report.md` with SVG files,
//! `html.rs` as one self-contained `report.html`; both from the same document, so the two
//! formats say the same.

/// The whole report.
pub(crate) struct Page {
    /// The title (`# …`, `<title>`).
    pub(crate) title: String,
    pub(crate) blocks: Vec<Block>,
}

/// One part of the document.
pub(crate) enum Block {
    /// A section heading of level 2 or deeper (level 1 is the title).
    Heading(u8, String),
    /// A paragraph.
    Text(Text),
    /// A bulleted list.
    List(Vec<Text>),
    Table(Table),
    Figure(Figure),
    /// Preformatted text (the settings).
    Code(String),
    /// Cards side by side (one after the other in Markdown).
    Cards(Vec<Card>),
    /// A part shown folded in HTML (a section in Markdown): its summary line and content.
    Details(String, Vec<Block>),
}

/// A paragraph: plain text and code spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Text(pub(crate) Vec<Span>);

/// A run of text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Span {
    Plain(String),
    /// A name from the pipeline (a stage, a phase, a file): `code`.
    Code(String),
}

impl Text {
    /// A paragraph of plain text.
    pub(crate) fn plain(text: impl Into<String>) -> Text {
        Text(vec![Span::Plain(text.into())])
    }

    /// Adds plain text.
    pub(crate) fn and(mut self, text: impl Into<String>) -> Text {
        self.0.push(Span::Plain(text.into()));
        self
    }

    /// Adds a code span.
    pub(crate) fn code(mut self, text: impl Into<String>) -> Text {
        self.0.push(Span::Code(text.into()));
        self
    }
}

/// A table; HTML makes every one sortable by clicking a column's header.
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<Cell>>,
    /// What the values were read from (a table of the run, relative to the run directory),
    /// when they are one table's values.
    pub(crate) source: Option<String>,
}

/// A table cell: its text, and the exact numbers it shows (written with every digit in HTML,
/// so the page can be sorted and checked against the tables it was made from).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cell {
    pub(crate) text: String,
    pub(crate) numbers: Vec<f64>,
    /// Shown in bold (the best of several).
    pub(crate) strong: bool,
}

impl Cell {
    /// A cell of text.
    pub(crate) fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            ..Cell::default()
        }
    }

    /// A cell showing `numbers` as `text`.
    pub(crate) fn numbers(text: impl Into<String>, numbers: Vec<f64>) -> Cell {
        Cell {
            text: text.into(),
            numbers,
            strong: false,
        }
    }
}

/// A plot.
pub(crate) struct Figure {
    /// Parts of its file name in Markdown (`<parts joined by _>.svg`).
    pub(crate) name: Vec<String>,
    /// What it shows, in a few words (alternative text).
    pub(crate) alt: String,
    /// The picture.
    pub(crate) svg: String,
}

/// A card of [`Block::Cards`]: a title and what it holds.
pub(crate) struct Card {
    pub(crate) title: String,
    pub(crate) blocks: Vec<Block>,
}
