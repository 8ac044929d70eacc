//! The workspace's module structure: no import circles between modules, stage modules are
//! leaves (only the registry names them), and files are opened one way only (the regular-file
//! helper). Read from the sources: every `use` and every inline
//! `crate::…`/`super::…`/`self::…` path is an edge to the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules: path (`train::fit`) → source text without its test module and comments.
struct Crate {
    name: String,
    modules: BTreeMap<String, String>,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every workspace crate's `src/` (the root binary's too).
fn crates() -> Vec<Crate> {
    let root = workspace();
    let mut dirs = vec![("mmflow".to_string(), root.join("src"))];
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            dirs.push((name, dir.join("src")));
        }
    }
    dirs.into_iter()
        .map(|(name, src)| {
            let mut modules = BTreeMap::new();
            collect(&src, &src, &mut modules);
            Crate { name, modules }
        })
        .collect()
}

fn collect(src: &Path, dir: &Path, modules: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(src, &path, modules);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            // A module file named `tests` (or inside a `tests` folder) holds test code: it is
            // declared `#[cfg(test)] mod tests;` beside the code it tests.
            if parts.iter().any(|p| p == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            modules.insert(parts.join("::"), code_of(&text));
        }
    }
}

/// The text without comments and from its first test module on (`#[cfg(test)]` or
/// `#[cfg(all(test, …))]` before a `mod`: tests may reach anywhere, and sit at the end).
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first_test_module = lines.windows(2).position(|w| {
        (w[0].starts_with("#[cfg(test)]") || w[0].starts_with("#[cfg(all(test"))
            && w[1].starts_with("mod ")
    });
    lines[..first_test_module.unwrap_or(lines.len())]
        .iter()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a module's code names through `crate`, `super` or `self`, made absolute.
fn named_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let here: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    // `use` declarations: from a line starting with `use` (or `pub use`, `pub(crate) use`)
    // to the `;` that ends it (the code is rustfmt-formatted).
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(start) = ["use ", "pub use ", "pub(crate) use "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
        else {
            continue;
        };
        let mut statement = start.to_string();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => statement.push_str(more),
                None => break,
            }
        }
        let statement = statement.split(';').next().unwrap_or_default();
        // `x as y` renames: keep `x` (the `@` marks where the rename starts).
        let tree: String = statement
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" as ", "@")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for path in expand(&tree) {
            out.extend(absolute(&here, &path));
        }
    }
    // Inline paths (`crate::stats::pearson(…)`).
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let preceded = i > 0 && (bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        if !preceded
            && (rest.starts_with("crate::")
                || rest.starts_with("super::")
                || rest.starts_with("self::"))
        {
            let mut j = i;
            while j < bytes.len()
                && (bytes[j].is_alphanumeric() || bytes[j] == '_' || bytes[j] == ':')
            {
                j += 1;
            }
            let path: Vec<String> = bytes[i..j]
                .iter()
                .collect::<String>()
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            out.extend(absolute(&here, &path));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let Some(open) = tree.find('{') else {
        let path = tree.split('@').next().unwrap_or(tree);
        return vec![path
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()];
    };
    let prefix = &tree[..open];
    let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// A `crate::`/`super::`/`self::` path from module `here`, as an absolute path; other paths
/// (external crates, std) give nothing.
fn absolute(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here[..here.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    let mut rest = rest;
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// The module an absolute path names: its longest prefix that is a module.
fn module_of(modules: &BTreeMap<String, String>, path: &[String]) -> Option<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains_key(m))
}

/// Module → the modules it names (itself, its ancestors by `super`, and the crate root excluded).
fn edges(c: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    c.modules
        .iter()
        .map(|(module, code)| {
            let targets = named_paths(module, code)
                .into_iter()
                .filter_map(|p| module_of(&c.modules, &p))
                .filter(|t| t != module && !t.is_empty())
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out
}

#[test]
fn no_module_imports_in_a_circle() {
    let mut found = Vec::new();
    for c in crates() {
        for circle in circles(&edges(&c)) {
            found.push(format!("{}: {}", c.name, circle.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn stage_modules_are_leaves() {
    let mut found = Vec::new();
    let mut stages = 0;
    for c in crates() {
        let stage_modules: BTreeSet<&String> = c
            .modules
            .iter()
            .filter(|(_, code)| code.contains("StageKind for "))
            .map(|(m, _)| m)
            .collect();
        stages += stage_modules.len();
        for (module, targets) in edges(&c) {
            if module.is_empty() {
                continue; // the crate root registers the stages
            }
            for t in targets.iter().filter(|t| stage_modules.contains(t)) {
                found.push(format!("{}: `{module}` uses stage module `{t}`", c.name));
            }
        }
    }
    assert!(stages >= 10, "stage modules found: {stages}");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_reader_sees_a_circle_and_a_stage_import() {
    let mut modules = BTreeMap::new();
    modules.insert(String::new(), "pub mod a;".to_string());
    modules.insert(
        "a".into(),
        "use super::b::{self, Thing};\nimpl StageKind for A {}".into(),
    );
    modules.insert("b".into(), "fn f() { crate::a::run(); }".into());
    let c = Crate {
        name: "test".into(),
        modules,
    };
    assert_eq!(
        circles(&edges(&c)),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
}

/// Ways to open a file for reading other than `mmflow_schemas::files`: a FIFO, a device or a
/// folder in a file's place would block, never end or fail obscurely there.
const UNCHECKED_OPENS: [&str; 7] = [
    "File::open(",
    "fs::read(",
    "fs::read_to_string(",
    "File::options().read(",
    "OpenOptions::new().read(",
    "Hdf5File::open",
    "Tokenizer::from_file(",
];

/// Where a module's code opens a file without the regular-file helper.
fn unchecked_opens(module: &str, code: &str) -> Vec<String> {
    // `CsdFile::open(` is not `File::open(`: a match must start a path segment.
    let opens = |line: &str| {
        UNCHECKED_OPENS.iter().any(|open| {
            line.match_indices(open).any(|(at, _)| {
                !line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
    };
    code.lines()
        .enumerate()
        .filter(|(_, line)| opens(line))
        .map(|(n, line)| format!("{module}:{}: {}", n + 1, line.trim()))
        .collect()
}

#[test]
fn every_file_is_opened_through_the_regular_file_helper() {
    let mut found = Vec::new();
    let mut modules = 0;
    for c in crates() {
        for (module, code) in &c.modules {
            let last = module.rsplit("::").next().unwrap_or_default();
            // The helper itself, and test modules in files of their own.
            let exempt = (c.name == "schemas" && module == "files")
                || last == "tests"
                || last.ends_with("_tests");
            if !exempt {
                modules += 1;
                found.extend(unchecked_opens(&format!("{}::{module}", c.name), code));
            }
        }
    }
    assert!(modules >= 50, "modules read: {modules}");
    assert!(
        found.is_empty(),
        "open these through mmflow_schemas::files (open_regular, read_regular, \
         read_regular_at_most):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_reader_sees_an_unchecked_open() {
    let code =
        "let t = std::fs::read_to_string(&p)?;\nlet f = open_regular(&p)?;\nCsdFile::open(&p)";
    assert_eq!(
        unchecked_opens("m", code),
        ["m:1: let t = std::fs::read_to_string(&p)?;"]
    );
}
