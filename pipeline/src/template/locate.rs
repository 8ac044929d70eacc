//! Where a template's problems are: problems found while expanding are located at the
//! template's keys ([`Report`], [`Place`]), and problems of the expanded document at the
//! template stage an expanded stage came from, unless a `--set` changed it ([`Locator`]).

use std::collections::BTreeMap;

use crate::problem::{Found, KeyPath, Location, ParamProblem, Problem, Seg, SourceMap};

use super::{Expansion, STAGES};

/// Reports the problems of the templates, located through the source map.
pub(super) struct Report<'a> {
    pub(super) map: &'a SourceMap,
    pub(super) found: &'a mut Found,
}

impl Report<'_> {
    /// A problem with a key itself.
    pub(super) fn key(&mut self, at: KeyPath, message: impl Into<String>) {
        let map = self.map;
        self.found.add(|| map.problem(at, message));
    }

    /// A problem with a value.
    pub(super) fn value(&mut self, at: KeyPath, message: impl Into<String>) {
        let map = self.map;
        self.found.add(|| map.value_problem(at, message));
    }

    /// A problem with the value at `place`, worded by `message` (both made only for a
    /// problem that is shown).
    pub(super) fn value_at(&mut self, place: Place<'_>, message: impl FnOnce() -> String) {
        let map = self.map;
        self.found
            .add(|| map.value_problem(place.path(), message()));
    }

    /// How many problems were reported so far: a step compares it before and after.
    pub(super) fn reports(&self) -> usize {
        self.found.reports()
    }

    /// A problem of deserialisation (`unknown` when the key itself is at fault); whether
    /// to go on checking.
    pub(super) fn deserialization(
        &mut self,
        at: KeyPath,
        message: String,
        unknown: bool,
    ) -> std::ops::ControlFlow<()> {
        if unknown {
            self.key(at, message)
        } else {
            self.value(at, message)
        }
        self.found.keep_checking()
    }
}

/// Where a value lies below a template stage, as steps from a known path: the [`KeyPath`]
/// is made only for a problem that is shown, so walking a stage copies no path per value.
#[derive(Clone, Copy)]
pub(super) enum Place<'a> {
    /// At this path.
    At(&'a KeyPath),
    /// Key `.1` of the table at `.0`.
    Key(&'a Place<'a>, &'a str),
    /// Element `.1` of the array at `.0`.
    Index(&'a Place<'a>, usize),
}

impl Place<'_> {
    /// The key path of this place.
    pub(super) fn path(&self) -> KeyPath {
        match self {
            Place::At(path) => (*path).clone(),
            Place::Key(parent, key) => {
                let mut path = parent.path();
                path.0.push(Seg::Key(key.to_string()));
                path
            }
            Place::Index(parent, i) => {
                let mut path = parent.path();
                path.0.push(Seg::Index(*i));
                path
            }
        }
    }
}

/// Locates the problems of the expanded document: a key below an expanded stage is located
/// at the template stage it came from, unless a `--set` of that stage changed it.
pub(crate) struct Locator {
    pub(super) map: SourceMap,
    pub(super) origins: BTreeMap<String, KeyPath>,
    /// `--set` overrides of expanded (or `@`-named) stages, applied after expansion.
    pub(super) instance_overrides: Vec<(KeyPath, String)>,
}

impl Locator {
    /// A locator over `map` for the stages `expansion` added.
    pub(crate) fn new(map: SourceMap, expansion: Expansion) -> Self {
        Locator {
            map,
            origins: expansion.origins,
            instance_overrides: Vec::new(),
        }
    }

    /// Records that `path` (below an expanded stage) was set by `arg`.
    pub(crate) fn add_instance_override(&mut self, path: KeyPath, arg: String) {
        self.instance_overrides.push((path, arg));
    }

    /// A problem with the key `key` itself (e.g. an unknown key).
    pub(crate) fn problem(&self, key: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            location: self.locate(&key, false),
            key,
            message: message.into(),
        }
    }

    /// A problem with the value of `key`.
    pub(crate) fn value_problem(&self, key: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            location: self.locate(&key, true),
            key,
            message: message.into(),
        }
    }

    /// A stage's own problem with its params, for a stage whose params are at `params`.
    pub(crate) fn param_problem(&self, problem: ParamProblem, params: &KeyPath) -> Problem {
        let key = params.join(&problem.path);
        if problem.at_key {
            self.problem(key, problem.message)
        } else {
            self.value_problem(key, problem.message)
        }
    }

    pub(super) fn locate(&self, key: &KeyPath, at_value: bool) -> Location {
        if let Some((_, arg)) = self
            .instance_overrides
            .iter()
            .filter(|(p, _)| p.is_prefix_of(key) || key.is_prefix_of(p))
            .max_by_key(|(p, _)| p.0.len())
        {
            return Location::Override(arg.clone());
        }
        match self.origin_of(key) {
            Some(origin) => self.map.locate(&origin, at_value),
            None => self.map.locate(key, at_value),
        }
    }

    /// Where `stages.<expanded id>.<rest>` is written: `templates.<t>.stages.<stage>.<rest>`.
    pub(super) fn origin_of(&self, key: &KeyPath) -> Option<KeyPath> {
        match key.0.as_slice() {
            [Seg::Key(top), Seg::Key(id), rest @ ..] if top == STAGES => self
                .origins
                .get(id)
                .map(|origin| origin.join(&KeyPath(rest.to_vec()))),
            _ => None,
        }
    }
}
