//! Configuration problems and where they are: every problem names its file, line and column
//! (or the `--set` argument it came from) and the key at fault.

use std::cell::Cell;
use std::fmt;
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

/// A list of problems, displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

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
    /// Problems located so far: finding a position scans the file, so past
    /// [`MAX_LOCATED`] problems (a machine-made file with a mistake repeated in every entry)
    /// are reported against the whole file instead of costing a scan each.
    located: Cell<usize>,
}

/// Problems given a line and column per file; the rest name the file only.
pub const MAX_LOCATED: usize = 1000;

impl SourceMap {
    /// A source map over a parsed document.
    pub fn new(path: &Path, text: String, doc: Option<toml_edit::Document<String>>) -> Self {
        SourceMap {
            path: path.to_path_buf(),
            text,
            doc,
            overrides: Vec::new(),
            located: Cell::new(0),
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
            .and_then(|d| span_of(d.as_item(), &key.0, at_value))
        {
            Some(span) => self.position(span.start),
            None => Location::WholeFile(self.path.clone()),
        }
    }

    fn position(&self, offset: usize) -> Location {
        let located = self.located.get();
        if located >= MAX_LOCATED {
            return Location::WholeFile(self.path.clone());
        }
        self.located.set(located + 1);
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before[line_start..].chars().count() + 1;
        Location::File {
            path: self.path.clone(),
            line,
            column,
        }
    }
}

/// The span of the deepest item on `path`: when the last step is a key, the key itself, or
/// its value if `at_value`.
fn span_of(item: &toml_edit::Item, path: &[Seg], at_value: bool) -> Option<Range<usize>> {
    let Some((first, rest)) = path.split_first() else {
        return item.span();
    };
    let deeper = match first {
        Seg::Key(k) => {
            let table = item.as_table_like()?;
            match table.get_key_value(k) {
                Some((key, child)) => {
                    if rest.is_empty() && at_value {
                        child.span().or_else(|| key.span())
                    } else if rest.is_empty() {
                        key.span().or_else(|| child.span())
                    } else {
                        span_of(child, rest, at_value).or_else(|| key.span())
                    }
                }
                None => None,
            }
        }
        Seg::Index(i) => match item {
            toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                let v = a.get(*i)?;
                if rest.is_empty() {
                    v.span()
                } else {
                    span_of(&toml_edit::Item::Value(v.clone()), rest, at_value).or_else(|| v.span())
                }
            }
            toml_edit::Item::ArrayOfTables(a) => {
                let t = a.get(*i)?;
                let item = toml_edit::Item::Table(t.clone());
                span_of(&item, rest, at_value).or_else(|| t.span())
            }
            _ => None,
        },
    };
    deeper.or_else(|| item.span())
}
