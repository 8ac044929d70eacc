//! What the machine built, turned into [`PyValue`]s: measured first (each container once,
//! so a memo bomb is refused in time proportional to the file), charged to the [`Budget`],
//! then built, arrays shared where the file shares them.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::{PickleError, PyValue, Source};
use super::{Budget, Container, Obj, Val, Vm, MAX_DEPTH};

impl<S: Source + ?Sized> Vm<'_, S> {
    /// Takes `n` from one part of the budget, or refuses the file, saying what it would
    /// expand to.
    fn charge(
        &mut self,
        part: fn(&mut Budget) -> &mut usize,
        n: usize,
        what: &str,
    ) -> Result<(), PickleError> {
        let left = part(&mut self.left);
        if let Some(rest) = left.checked_sub(n) {
            *left = rest;
            return Ok(());
        }
        let limit = *part(&mut Budget::for_file(self.size));
        let used = limit.saturating_sub(*left);
        self.error(format!(
            "the data would expand to {} {what}, past the {limit} a {}-byte file may hold \
             (memo references repeat the same objects over and over: a memo bomb); refusing it",
            used.saturating_add(n),
            self.size
        ))
    }

    pub(super) fn charge_values(&mut self, n: usize) -> Result<(), PickleError> {
        self.charge(|b| &mut b.values, n, "values")
    }

    pub(super) fn charge_text(&mut self, n: usize) -> Result<(), PickleError> {
        self.charge(|b| &mut b.text_bytes, n, "bytes of strings")
    }

    pub(super) fn charge_array(&mut self, n: usize) -> Result<(), PickleError> {
        self.charge(|b| &mut b.array_bytes, n, "bytes decoded into arrays")
    }

    /// What converting `v` at `depth` would build, measured on the graph before anything is
    /// built: each container once (`seen` keeps what it expands to), so a memo bomb is
    /// refused in time proportional to the file, not to what it would expand to. A container
    /// met again inside itself is a cycle.
    fn expansion(
        &self,
        v: &Val,
        depth: usize,
        seen: &mut HashMap<usize, Measured>,
    ) -> Result<Expansion, PickleError> {
        if depth > MAX_DEPTH {
            return self.error(format!("data nested more than {MAX_DEPTH} levels deep"));
        }
        let index = match v {
            Val::Str(s) => return Ok(Expansion::leaf(s.len())),
            Val::Ref(i) => *i,
            Val::None | Val::Bool(_) | Val::Int(_) | Val::Float(_) => {
                return Ok(Expansion::leaf(0))
            }
        };
        match seen.get(&index) {
            Some(Measured::Open) => {
                return self.error("the data contains itself (a cyclic reference): not plain data")
            }
            Some(Measured::Done(e)) if depth.saturating_add(e.height) > MAX_DEPTH => {
                return self.error(format!("data nested more than {MAX_DEPTH} levels deep"))
            }
            Some(Measured::Done(e)) => return Ok(*e),
            None => {}
        }
        let items: Vec<&Val> = match self.arena.get(index) {
            None => return self.error("reference to an object that does not exist"),
            Some(Obj::Bytes(b)) => return Ok(Expansion::leaf(b.len())),
            Some(Obj::Array(_)) => return Ok(Expansion::leaf(0)),
            Some(Obj::Global(_) | Obj::Dtype(_)) => {
                return self.error("a bare numpy type is not data")
            }
            Some(Obj::List(items) | Obj::Tuple(items)) => items.iter().collect(),
            Some(Obj::Dict(pairs)) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        };
        seen.insert(index, Measured::Open);
        let mut total = Expansion::leaf(0);
        for item in items {
            total = total.holding(self.expansion(item, depth.saturating_add(1), seen)?);
        }
        seen.insert(index, Measured::Done(total));
        Ok(total)
    }

    /// The public values of `vals`: measured together, charged to the budget, and only then
    /// built. `seen` lives for one call: a container may still change after it.
    pub(super) fn values_of(&mut self, vals: &[Val]) -> Result<Vec<PyValue>, PickleError> {
        let mut seen = HashMap::new();
        let mut total = Expansion::leaf(0);
        for v in vals {
            total = total.holding(self.expansion(v, 0, &mut seen)?);
        }
        drop(seen);
        // `total` counts one value for the list of `vals` itself, which is not built.
        self.charge_values(total.values.saturating_sub(1))?;
        self.charge_text(total.text_bytes)?;
        vals.iter().map(|v| self.convert(v)).collect()
    }

    /// Converts a stack value (measured by [`Vm::expansion`]) into the public tree. Arrays
    /// are shared, never copied.
    fn convert(&mut self, v: &Val) -> Result<PyValue, PickleError> {
        let index = match v {
            Val::None => return Ok(PyValue::None),
            Val::Bool(b) => return Ok(PyValue::Bool(*b)),
            Val::Int(i) => return Ok(PyValue::Int(*i)),
            Val::Float(f) => return Ok(PyValue::Float(*f)),
            Val::Str(s) => return Ok(PyValue::Str(s.to_string())),
            Val::Ref(i) => *i,
        };
        // Containers are cloned shallowly (their items are Vals); arrays are moved, once.
        let (kind, items): (Container, Vec<Val>) = match self.arena.get_mut(index) {
            None => return self.error("reference to an object that does not exist"),
            Some(Obj::Bytes(_)) => return Ok(PyValue::Bytes(self.held_bytes(v)?)),
            Some(Obj::Array(slot)) => {
                let shared = match slot.take() {
                    Some(array) => Arc::new(array),
                    None => match self.converted.get(&index) {
                        Some(shared) => return Ok(PyValue::Array(Arc::clone(shared))),
                        None => return self.error("an array was never filled (BUILD missing)"),
                    },
                };
                self.converted.insert(index, Arc::clone(&shared));
                return Ok(PyValue::Array(shared));
            }
            Some(Obj::Global(_) | Obj::Dtype(_)) => {
                return self.error("a bare numpy type is not data")
            }
            Some(Obj::List(items)) => (Container::List, items.clone()),
            Some(Obj::Tuple(items)) => (Container::Tuple, items.clone()),
            Some(Obj::Dict(pairs)) => (
                Container::Dict,
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
            ),
        };
        let values = items
            .iter()
            .map(|x| self.convert(x))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match kind {
            Container::List => PyValue::List(values),
            Container::Tuple => PyValue::Tuple(values),
            Container::Dict => {
                let mut pairs = Vec::with_capacity(values.len() / 2);
                let mut it = values.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                PyValue::Dict(pairs)
            }
        })
    }

    pub(in super::super) fn finish(&mut self, top: Val) -> Result<PyValue, PickleError> {
        self.op_start = self.pos;
        let mut values = self.values_of(std::slice::from_ref(&top))?;
        Ok(values.pop().expect("one value for one"))
    }
}

/// What converting one value builds: values (each list item, dict key and value, scalar,
/// array reference), bytes of strings copied, and how many levels of containers it nests.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expansion {
    values: usize,
    text_bytes: usize,
    height: usize,
}

impl Expansion {
    /// One value holding `text_bytes` of text (0 for a number or an array).
    fn leaf(text_bytes: usize) -> Expansion {
        Expansion {
            values: 1,
            text_bytes,
            height: 0,
        }
    }

    /// This container with `item` added to it (saturating: a bomb's count only needs to
    /// exceed the budget).
    fn holding(self, item: Expansion) -> Expansion {
        Expansion {
            values: self.values.saturating_add(item.values),
            text_bytes: self.text_bytes.saturating_add(item.text_bytes),
            height: self.height.max(item.height.saturating_add(1)),
        }
    }
}

/// Where [`Vm::expansion`] stands with one arena object it has met.
#[derive(Debug, Clone, Copy)]
pub(super) enum Measured {
    /// On the path from the root: met again means a cycle.
    Open,
    Done(Expansion),
}
