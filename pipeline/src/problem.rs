//! Configuration problems and where they are: every problem names its file, line and column
//! (or the `--set` argument it came from) and the key at fault.

use std::cell::OnceCell;
use std::fmt;
use std::ops::ControlFlow;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One step of a path into the configuration document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path into the configuration document, e.g. `stages.norm.params.clip`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path of the given keys.
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        KeyPath(keys.into_iter().map(|k| Seg::Key(k.into())).collect())
    }

    /// This path extended by a key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.into()));
        p
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }

    /// This path extended by another.
    pub fn join(&self, rest: &KeyPath) -> Self {
        let mut p = self.clone();
        p.0.extend(rest.0.iter().cloned());
        p
    }

    /// True if `self` is a prefix of `other` (or equal to it).
    pub fn is_prefix_of(&self, other: &KeyPath) -> bool {
        other.0.len() >= self.0.len() && other.0[..self.0.len()] == self.0[..]
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// A position in a file (1-based line and column).
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
    },
    /// A `--set` argument on the command line.
    Override(String),
    /// A file as a whole.
    WholeFile(PathBuf),
}

/// Longest `--set` argument shown in full in a message (in characters).
const MAX_SHOWN_OVERRIDE: usize = 200;

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Location::Override(arg) => match arg.char_indices().nth(MAX_SHOWN_OVERRIDE) {
                Some((cut, _)) => write!(f, "--set {}… ({} bytes)", &arg[..cut], arg.len()),
                None => write!(f, "--set {arg}"),
            },
            Location::WholeFile(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Most names a message lists (a stage may have thousands of outputs, a matrix thousands of
/// variables).
pub const MAX_LISTED: usize = 20;

/// `total` names as a message lists them, `, `-separated: the first [`MAX_LISTED`], then how
/// many more there are. The rest of `names` is not looked at.
pub fn listed<S: fmt::Display>(names: impl IntoIterator<Item = S>, total: usize) -> String {
    let mut shown: Vec<String> = names
        .into_iter()
        .take(MAX_LISTED)
        .map(|n| n.to_string())
        .collect();
    if total > shown.len() {
        shown.push(format!("… ({} more)", total - shown.len()));
    }
    shown.join(", ")
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Where it is.
    pub location: Location,
    /// The key at fault, as a dotted path.
    pub key: KeyPath,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.0.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.location, self.key, self.message)
        }
    }
}

/// Most problems one load keeps: they are located and shown; the rest are only counted, so a
/// machine-made file with a mistake in every entry costs no more than its size to check.
pub const MAX_SHOWN: usize = 200;

/// The problems of a configuration: the first [`MAX_SHOWN`] found (sorted by place), and how
/// many more there are. Displayed one per line, with a last line for those not shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    /// The problems shown, sorted by place.
    pub shown: Vec<Problem>,
    /// Problems found beyond those shown.
    pub more: usize,
    /// Whether checking stopped before the end of the file (there may be more still).
    pub stopped: bool,
}

impl Problems {
    /// One problem.
    pub fn one(problem: Problem) -> Self {
        Problems {
            shown: vec![problem],
            more: 0,
            stopped: false,
        }
    }

    /// How many problems were found.
    pub fn count(&self) -> usize {
        self.shown.len() + self.more
    }

    /// The line after the problems shown, when some are not: how many, and whether checking
    /// stopped early.
    pub fn rest(&self) -> Option<String> {
        match (self.more, self.stopped) {
            (0, false) => None,
            (more, false) => Some(format!("… and {more} more problems not shown")),
            (more, true) => Some(format!(
                "… and {more} more problems not shown; checking stopped after {} problems, there may be more",
                self.count()
            )),
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.shown.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        if let Some(rest) = self.rest() {
            if !self.shown.is_empty() {
                writeln!(f)?;
            }
            write!(f, "{rest}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Problems as they are found: the first [`MAX_SHOWN`] are built (located, worded) and kept,
/// the rest only counted, so that no input makes checking cost more than its size.
#[derive(Debug, Default)]
pub(crate) struct Found {
    shown: Vec<Problem>,
    /// Problems reported past the first [`MAX_SHOWN`].
    more: usize,
    /// Every report, repeats included.
    reports: usize,
    stopped: bool,
}

impl Found {
    /// Reports a problem: `problem` builds it, and runs only while fewer than [`MAX_SHOWN`]
    /// are kept (a problem reported twice is kept once).
    pub(crate) fn add(&mut self, problem: impl FnOnce() -> Problem) {
        self.reports += 1;
        if self.is_full() {
            self.more += 1;
            return;
        }
        let problem = problem();
        if !self.shown.contains(&problem) {
            self.shown.push(problem);
        }
    }

    /// How many times a problem was reported, repeats included: a step compares it before
    /// and after to learn whether it found any.
    pub(crate) fn reports(&self) -> usize {
        self.reports
    }

    /// True when nothing was reported.
    pub(crate) fn is_empty(&self) -> bool {
        self.reports == 0
    }

    /// True once [`MAX_SHOWN`] problems are kept: later ones are only counted.
    pub(crate) fn is_full(&self) -> bool {
        self.shown.len() >= MAX_SHOWN
    }

    /// Notes that checking stopped early (what is left may hold more problems).
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether a check that finds problems by trying again after each (costly on a large
    /// value) should go on: not once [`MAX_SHOWN`] are kept, when checking stops there.
    pub(crate) fn keep_checking(&mut self) -> ControlFlow<()> {
        if self.is_full() {
            self.stop();
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// The problems found, sorted by place.
    pub(crate) fn into_problems(self) -> Problems {
        let mut shown = self.shown;
        shown.sort();
        Problems {
            shown,
            more: self.more,
            stopped: self.stopped,
        }
    }
}

/// A problem found by a stage in its own params: the path is relative to `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    /// Path below the stage's `params` table (empty for the table as a whole).
    pub path: KeyPath,
    /// What is wrong.
    pub message: String,
    /// True when the key itself is at fault (unknown), false when its value is.
    pub at_key: bool,
}

impl ParamProblem {
    /// A problem with the value of param `key` (a dotted path; empty for the whole table).
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        ParamProblem {
            path: KeyPath::keys(key.split('.').filter(|k| !k.is_empty())),
            message: message.into(),
            at_key: false,
        }
    }

    /// A problem with the value at `path` (below `params`), e.g. one element of a list.
    pub fn at(path: KeyPath, message: impl Into<String>) -> Self {
        ParamProblem {
            path,
            message: message.into(),
            at_key: false,
        }
    }

    /// This problem as a located [`Problem`], for a stage whose params are at `params`.
    pub fn locate(self, map: &SourceMap, params: &KeyPath) -> Problem {
        let key = params.join(&self.path);
        if self.at_key {
            map.problem(key, self.message)
        } else {
            map.value_problem(key, self.message)
        }
    }
}

/// Turns byte offsets of a document into line/column positions, and `--set` paths into
/// their arguments.
#[derive(Debug)]
pub struct SourceMap {
    path: PathBuf,
    text: String,
    doc: Option<toml_edit::Document<String>>,
    overrides: Vec<(KeyPath, String)>,
    /// Where each line starts (built for the first problem located): a position is a search
    /// in it, not a scan of the file.
    line_starts: OnceCell<Vec<usize>>,
}

impl SourceMap {
    /// A source map over a parsed document.
    pub fn new(path: &Path, text: String, doc: Option<toml_edit::Document<String>>) -> Self {
        SourceMap {
            path: path.to_path_buf(),
            text,
            doc,
            overrides: Vec::new(),
            line_starts: OnceCell::new(),
        }
    }

    /// Records that `path` was set from the command line by `arg`.
    pub fn add_override(&mut self, path: KeyPath, arg: String) {
        self.overrides.push((path, arg));
    }

    /// The file this map describes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A problem with the key `key` itself (e.g. an unknown key): located at the key.
    pub fn problem(&self, key: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            location: self.locate(&key, false),
            key,
            message: message.into(),
        }
    }

    /// A problem with the value of `key` (bad type, out of range, dangling reference):
    /// located at the value.
    pub fn value_problem(&self, key: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            location: self.locate(&key, true),
            key,
            message: message.into(),
        }
    }

    /// A problem at a byte span of the file.
    pub fn problem_at_span(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
        Problem {
            location: self.position(span.start),
            key: KeyPath::default(),
            message: message.into(),
        }
    }

    /// Where `key` is: the `--set` argument that set it (or one of its parents), else its
    /// position in the file, else the position of its deepest ancestor present in the file.
    pub fn locate(&self, key: &KeyPath, at_value: bool) -> Location {
        // The most specific override wins.
        if let Some((_, arg)) = self
            .overrides
            .iter()
            .filter(|(p, _)| p.is_prefix_of(key) || key.is_prefix_of(p))
            .max_by_key(|(p, _)| p.0.len())
        {
            return Location::Override(arg.clone());
        }
        match self
            .doc
            .as_ref()
            .and_then(|d| span_of(Node::Item(d.as_item()), &key.0, at_value))
        {
            Some(span) => self.position(span.start),
            None => Location::WholeFile(self.path.clone()),
        }
    }

    fn position(&self, offset: usize) -> Location {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(at, _)| at + 1))
                .collect()
        });
        let offset = offset.min(self.text.len());
        // The lines starting at or before `offset`: at least the first.
        let line = starts.partition_point(|&start| start <= offset).max(1);
        let column = self
            .text
            .get(starts[line - 1]..offset)
            .map_or(0, |before| before.chars().count());
        Location::File {
            path: self.path.clone(),
            line,
            column: column + 1,
        }
    }
}

/// A node of the parsed document, borrowed: an item, or a value or table inside an array.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Value(&'a toml_edit::Value),
    Table(&'a toml_edit::Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Value(value) => value.span(),
            Node::Table(table) => table.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Value(value) => value
                .as_inline_table()
                .map(|t| t as &dyn toml_edit::TableLike),
            Node::Table(table) => Some(table),
        }
    }

    /// Element `i` of an array (of values or of tables): `None` when this is no array,
    /// `Some(None)` when it has no element `i`.
    fn element(self, i: usize) -> Option<Option<Node<'a>>> {
        match self {
            Node::Item(toml_edit::Item::Value(toml_edit::Value::Array(a)))
            | Node::Value(toml_edit::Value::Array(a)) => Some(a.get(i).map(Node::Value)),
            Node::Item(toml_edit::Item::ArrayOfTables(a)) => Some(a.get(i).map(Node::Table)),
            _ => None,
        }
    }
}

/// The span of the deepest node on `path`: when the last step is a key, the key itself, or
/// its value if `at_value`.
fn span_of(node: Node<'_>, path: &[Seg], at_value: bool) -> Option<Range<usize>> {
    let Some((first, rest)) = path.split_first() else {
        return node.span();
    };
    let deeper = match first {
        Seg::Key(k) => match node.table_like()?.get_key_value(k) {
            Some((key, child)) => {
                if rest.is_empty() && at_value {
                    child.span().or_else(|| key.span())
                } else if rest.is_empty() {
                    key.span().or_else(|| child.span())
                } else {
                    span_of(Node::Item(child), rest, at_value).or_else(|| key.span())
                }
            }
            None => None,
        },
        Seg::Index(i) => match node.element(*i) {
            Some(child) => {
                let child = child?;
                if rest.is_empty() {
                    child.span()
                } else {
                    span_of(child, rest, at_value).or_else(|| child.span())
                }
            }
            None => None,
        },
    };
    deeper.or_else(|| node.span())
}

/// Most keys a `--set` key path may hold (the deepest key a pipeline has holds under 10); the
/// tables it creates are walked recursively later, so their depth must stay small.
const MAX_OVERRIDE_DEPTH: usize = 32;
/// Longest `--set` key path, in bytes.
const MAX_OVERRIDE_KEY_LEN: usize = 1024;

/// Splits a dotted key path (`stages.model.params.dropout`) as `--set` and `sweep.vary` take
/// them: keys neither empty nor holding `=`, at most [`MAX_OVERRIDE_DEPTH`] of them, the whole
/// at most [`MAX_OVERRIDE_KEY_LEN`] bytes.
pub(crate) fn dotted_keys(key: &str) -> Result<Vec<String>, String> {
    if key.len() > MAX_OVERRIDE_KEY_LEN {
        return Err(format!(
            "the key path is {} bytes long; at most {MAX_OVERRIDE_KEY_LEN}",
            key.len()
        ));
    }
    let depth = key.split('.').count();
    if depth > MAX_OVERRIDE_DEPTH {
        return Err(format!(
            "the key path holds {depth} keys; at most {MAX_OVERRIDE_DEPTH}"
        ));
    }
    let keys: Vec<String> = key.split('.').map(str::to_string).collect();
    if keys.iter().any(|k| k.is_empty() || k.contains('=')) {
        return Err(format!("`{key}` is not a dotted key path"));
    }
    Ok(keys)
}
