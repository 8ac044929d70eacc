//! The stage graph: a topological order, and the cycles that prevent one. Both take time in
//! proportion to stages + edges, and neither recurses, so a long chain or ring of stages
//! costs no more than its size.

use std::collections::{BTreeSet, VecDeque};

/// A directed graph over vertices `0..n`; an edge `u → v` means `v` reads from `u`.
pub(crate) struct Graph {
    /// The vertices each vertex feeds, ascending.
    downstream: Vec<Vec<usize>>,
    /// The vertices each vertex reads from, ascending.
    upstream: Vec<Vec<usize>>,
}

/// Most vertices of a cycle written out in full; a longer one shows its ends.
const MAX_SHOWN_CYCLE: usize = 20;

impl Graph {
    /// The graph of `n` vertices whose vertex `v` reads from `upstream(v)`.
    pub(crate) fn new(upstream: Vec<Vec<usize>>) -> Self {
        let mut downstream = vec![Vec::new(); upstream.len()];
        for (v, ups) in upstream.iter().enumerate() {
            for &u in ups {
                downstream[u].push(v);
            }
        }
        let mut upstream = upstream;
        for list in upstream.iter_mut().chain(downstream.iter_mut()) {
            list.sort_unstable();
            list.dedup();
        }
        Graph {
            downstream,
            upstream,
        }
    }

    /// Kahn's algorithm, ties broken by the smallest vertex: every vertex not on or behind a
    /// cycle, each after those it reads from.
    pub(crate) fn order(&self) -> Vec<usize> {
        let mut indegree: Vec<usize> = self.upstream.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> =
            (0..indegree.len()).filter(|&v| indegree[v] == 0).collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(v) = ready.pop_first() {
            order.push(v);
            for &d in &self.downstream[v] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }

    /// One cycle per strongly connected component that holds one, each as the vertices
    /// around it in the direction data flows, starting at the component's smallest vertex
    /// (and not repeating it at the end); components in the order of their smallest vertex.
    pub(crate) fn cycles(&self) -> Vec<Vec<usize>> {
        let mut cycles: Vec<Vec<usize>> = components(&self.upstream)
            .into_iter()
            .filter_map(|component| self.cycle_in(&component))
            .collect();
        cycles.sort_unstable_by_key(|c| c[0]);
        cycles
    }

    /// A shortest cycle through the smallest vertex of `component`, if it has one (a
    /// component of one vertex has one only when that vertex reads from itself).
    fn cycle_in(&self, component: &[usize]) -> Option<Vec<usize>> {
        let start = *component.iter().min()?;
        let members: BTreeSet<usize> = component.iter().copied().collect();
        if component.len() == 1 {
            return self.upstream[start].contains(&start).then(|| vec![start]);
        }
        // Breadth-first along the data's direction until the walk is back at `start`.
        let mut came_from: std::collections::BTreeMap<usize, usize> = Default::default();
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for &d in &self.downstream[v] {
                if d == start {
                    let mut cycle = vec![v];
                    while let Some(&before) = came_from.get(cycle.last()?) {
                        cycle.push(before);
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if members.contains(&d) && !came_from.contains_key(&d) {
                    came_from.insert(d, v);
                    queue.push_back(d);
                }
            }
        }
        None
    }
}

/// A cycle's vertices, named, as the data flows: `a → b → c → a`; one of more than
/// [`MAX_SHOWN_CYCLE`] vertices shows the first and last few and how many lie between.
pub(crate) fn shown_cycle(names: &[&str]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    let mut shown: Vec<String> = Vec::new();
    if names.len() <= MAX_SHOWN_CYCLE {
        shown.extend(names.iter().map(|n| n.to_string()));
    } else {
        let half = MAX_SHOWN_CYCLE / 2;
        shown.extend(names[..half].iter().map(|n| n.to_string()));
        shown.push(format!("… ({} more stages) …", names.len() - 2 * half));
        shown.extend(names[names.len() - half..].iter().map(|n| n.to_string()));
    }
    shown.push(first.to_string());
    shown.join(" → ")
}

/// The state of Tarjan's algorithm.
struct Tarjan {
    /// Each vertex's visiting order; [`Tarjan::UNSEEN`] until it is visited.
    index: Vec<usize>,
    /// The smallest index reachable from each vertex through the walk.
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next_index: usize,
    /// The walk in progress (what recursion would keep): each vertex with the position of
    /// its next edge to follow.
    walk: Vec<(usize, usize)>,
}

impl Tarjan {
    const UNSEEN: usize = usize::MAX;

    fn visit(&mut self, v: usize) {
        self.index[v] = self.next_index;
        self.low[v] = self.next_index;
        self.next_index += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        self.walk.push((v, 0));
    }

    /// The component `v` roots: the stack down to `v`.
    fn pop_component(&mut self, v: usize) -> Vec<usize> {
        let mut component = Vec::new();
        while let Some(w) = self.stack.pop() {
            self.on_stack[w] = false;
            component.push(w);
            if w == v {
                break;
            }
        }
        component
    }
}

/// The strongly connected components of the graph whose vertex `v` has edges to
/// `edges[v]`: Tarjan's algorithm with an explicit stack instead of recursion.
fn components(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut t = Tarjan {
        index: vec![Tarjan::UNSEEN; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next_index: 0,
        walk: Vec::new(),
    };
    let mut found = Vec::new();
    for root in 0..n {
        if t.index[root] != Tarjan::UNSEEN {
            continue;
        }
        t.visit(root);
        while let Some(&(v, edge)) = t.walk.last() {
            if let Some(&w) = edges[v].get(edge) {
                if let Some(top) = t.walk.last_mut() {
                    top.1 += 1;
                }
                if t.index[w] == Tarjan::UNSEEN {
                    t.visit(w);
                } else if t.on_stack[w] {
                    t.low[v] = t.low[v].min(t.index[w]);
                }
                continue;
            }
            t.walk.pop();
            if let Some(&(parent, _)) = t.walk.last() {
                t.low[parent] = t.low[parent].min(t.low[v]);
            }
            if t.low[v] == t.index[v] {
                found.push(t.pop_component(v));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph of `n` vertices with edges `u → v` (v reads from u).
    fn graph(n: usize, edges: &[(usize, usize)]) -> Graph {
        let mut upstream = vec![Vec::new(); n];
        for &(u, v) in edges {
            upstream[v].push(u);
        }
        Graph::new(upstream)
    }

    #[test]
    fn the_order_puts_each_vertex_after_its_inputs_smallest_first() {
        let g = graph(5, &[(3, 1), (1, 0), (4, 2)]);
        assert_eq!(g.order(), [3, 1, 0, 4, 2]);
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn each_component_with_a_cycle_gives_one_from_its_smallest_vertex() {
        // 0 → 2 → 1 → 0 and 0 → 1 (a shorter cycle through 0); 3 ↔ 4; 5 reads itself;
        // 6 sits behind the first cycle and is on none.
        let g = graph(
            7,
            &[
                (0, 2),
                (2, 1),
                (1, 0),
                (0, 1),
                (3, 4),
                (4, 3),
                (5, 5),
                (1, 6),
            ],
        );
        assert_eq!(g.cycles(), [vec![0, 1], vec![3, 4], vec![5]]);
        assert!(g.order().is_empty());
    }

    #[test]
    fn a_ring_of_a_hundred_thousand_vertices_is_one_cycle() {
        let n = 100_000;
        let ring: Vec<(usize, usize)> = (0..n).map(|v| ((v + 1) % n, v)).collect();
        let cycles = graph(n, &ring).cycles();
        assert_eq!(cycles.len(), 1);
        let cycle = &cycles[0];
        assert_eq!(cycle.len(), n);
        // Data flows from n-1 into n-2 …: the cycle from 0 runs 0 → n-1 → … → 1.
        assert_eq!(&cycle[..3], &[0, n - 1, n - 2]);
    }

    #[test]
    fn a_long_cycle_shows_its_ends() {
        let names: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(shown_cycle(&names[..3]), "s0 → s1 → s2 → s0");
        let shown = shown_cycle(&names);
        assert!(
            shown.starts_with("s0 → s1 → ") && shown.ends_with("s28 → s29 → s0"),
            "{shown}"
        );
        assert!(shown.contains("… (10 more stages) …"), "{shown}");
    }
}
