//! The crate's layers point one way, and no two source files import each other.
//!
//! Reads the library's sources (every module `lib.rs` declares) as text, collects each file's
//! references to other modules of the crate (`use` trees and paths in code, through `crate::`,
//! `super::`, `self::` and child modules), resolves each to the file that defines the module, and
//! checks two rules:
//!
//! - a file imports only its own layer or the layers below it (the order in `LAYERS`);
//! - the graph of imports between files has no cycle, except a folder's `mod.rs` and the files
//!   it declares, which share its private items by design (`super::`).
//!
//! Unit-test modules (`#[cfg(test)]` items) are left out: tests may look anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top; a module may import its own layer and those before it. Modules of one rank
/// (`server` and `sim`) may not import each other.
const LAYERS: &[(&str, u32)] = &[
    ("device", 0),
    ("model", 1),
    ("runner", 2),
    ("engine", 3),
    ("server", 4),
    ("sim", 4),
    ("cli", 5),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rank(top: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|&(_, r)| r)
}

/// A source file and the module path it defines (`["engine", "executor"]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Module {
    file: PathBuf,
    path: Vec<String>,
}

/// The file defining module `path` under the crate root, if any.
fn file_of(path: &[String]) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for seg in path {
        rel.push(seg);
    }
    let as_file = root().join(&rel).with_extension("rs");
    let as_dir = root().join(&rel).join("mod.rs");
    if path.is_empty() {
        Some(root().join("lib.rs"))
    } else if as_file.is_file() {
        Some(as_file)
    } else if as_dir.is_file() {
        Some(as_dir)
    } else {
        None
    }
}

/// Source text without comments, string literals and `#[cfg(test)]` items.
fn code_of(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if src[i..].starts_with("/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('x' or an escape); lifetimes ('a) pass through.
            let close = src[i + 1..].find('\'').map_or(b.len(), |e| i + 1 + e + 1);
            i = close;
        } else if src[i..].starts_with("#[cfg(test)]") {
            i = skip_item(src, i + "#[cfg(test)]".len());
        } else {
            let c = src[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The index just past the item starting at `i`: up to its `;` or its balanced `{ … }`.
fn skip_item(src: &str, mut i: usize) -> usize {
    let b = src.as_bytes();
    while i < b.len() && b[i] != b'{' && b[i] != b';' {
        i += 1;
    }
    if i < b.len() && b[i] == b';' {
        return i + 1;
    }
    let mut depth = 0;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path the code names: the leaves of `use` trees and `a::b::c` paths in expressions.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':';
        if starts_word && is_ident(chars[i]) {
            let (prefix, next) = read_path(&chars, i);
            if next < chars.len() && chars[next] == '{' && !prefix.is_empty() {
                let end = tree_leaves(&chars, next, &prefix, &mut out);
                i = end;
                continue;
            }
            if prefix.len() > 1 {
                out.push(prefix);
            }
            i = next.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads `a::b::c` from `i`; returns the segments and the index after the last `::` or segment.
fn read_path(chars: &[char], mut i: usize) -> (Vec<String>, usize) {
    let mut segs = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if i == start {
            return (segs, i);
        }
        segs.push(chars[start..i].iter().collect());
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if j + 1 < chars.len() && chars[j] == ':' && chars[j + 1] == ':' {
            i = j + 2;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '{' {
                return (segs, i);
            }
        } else {
            return (segs, i);
        }
    }
}

/// The leaves of a `{ … }` use group opened at `open`, each joined to `prefix`; returns the
/// index after the closing brace.
fn tree_leaves(
    chars: &[char],
    open: usize,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '}' => return i + 1,
            c if is_ident(c) => {
                let (segs, next) = read_path(chars, i);
                let mut full = prefix.to_vec();
                full.extend(segs);
                if next < chars.len() && chars[next] == '{' {
                    i = tree_leaves(chars, next, &full, out);
                } else {
                    out.push(full);
                    i = next;
                    // `as name`: skip the alias.
                    let rest: String = chars[i..chars.len().min(i + 5)].iter().collect();
                    if rest.trim_start().starts_with("as ") {
                        while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                            i += 1;
                        }
                    }
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// The modules declared in `code` with `mod name;` (their files are children of this one).
fn child_mods(code: &str) -> BTreeSet<String> {
    code.split(';')
        .filter_map(|stmt| {
            let words: Vec<&str> = stmt.split_whitespace().collect();
            let at = words.iter().rposition(|w| *w == "mod")?;
            (at + 2 == words.len()).then(|| words[at + 1].to_string())
        })
        .collect()
}

/// Every module file of the library: lib.rs and what it declares, recursively.
fn modules() -> Vec<Module> {
    let mut found = Vec::new();
    let mut stack = vec![Vec::<String>::new()];
    while let Some(path) = stack.pop() {
        let Some(file) = file_of(&path) else {
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for child in child_mods(&code) {
            let mut p = path.clone();
            p.push(child);
            stack.push(p);
        }
        found.push(Module { file, path });
    }
    found.sort();
    found
}

/// The module file a path named in `m` refers to, if it is inside the crate.
fn resolve(
    m: &Module,
    is_dir_mod: bool,
    children: &BTreeSet<String>,
    p: &[String],
) -> Option<PathBuf> {
    let mut abs: Vec<String> = match p[0].as_str() {
        "crate" => Vec::new(),
        "self" => m.path.clone(),
        "super" => {
            let mut base = m.path.clone();
            let mut rest = p;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            return longest_file(&base);
        }
        first if children.contains(first) => m.path.clone(),
        _ => return None,
    };
    let skip = usize::from(p[0] == "crate" || p[0] == "self");
    abs.extend(p[skip..].iter().cloned());
    let _ = is_dir_mod;
    longest_file(&abs)
}

/// The file of the longest prefix of `path` that is a module.
fn longest_file(path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| file_of(&path[..n]))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

/// Each module file's imports of other module files.
fn import_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut graph = BTreeMap::new();
    for m in modules() {
        let code = code_of(&std::fs::read_to_string(&m.file).unwrap());
        let children = child_mods(&code);
        let is_dir_mod = m.file.ends_with("mod.rs");
        let mut targets = BTreeSet::new();
        for p in paths_in(&code) {
            if let Some(t) = resolve(&m, is_dir_mod, &children, &p) {
                if t != m.file && t != root().join("lib.rs") {
                    targets.insert(t);
                }
            }
        }
        graph.insert(m.file, targets);
    }
    graph
}

fn top_module(file: &Path) -> String {
    rel(file)
        .split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn the_library_has_the_layers_the_test_knows() {
    let tops: BTreeSet<String> = modules()
        .iter()
        .filter_map(|m| m.path.first().cloned())
        .collect();
    let known: BTreeSet<String> = LAYERS.iter().map(|(m, _)| m.to_string()).collect();
    assert_eq!(
        tops, known,
        "lib.rs declares modules LAYERS does not rank (or the reverse)"
    );
}

#[test]
fn no_module_imports_a_higher_layer_or_a_peer() {
    let mut bad = Vec::new();
    for (from, targets) in import_graph() {
        if from == root().join("lib.rs") {
            continue;
        }
        let (a, ra) = (top_module(&from), rank(&top_module(&from)).unwrap());
        for to in targets {
            let b = top_module(&to);
            let rb = rank(&b).unwrap();
            if rb > ra || (rb == ra && a != b) {
                bad.push(format!(
                    "{} (layer {a}) imports {} (layer {b})",
                    rel(&from),
                    rel(&to)
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other() {
    let graph = import_graph();
    // A module and the modules it declares share private items through `super::`: the edges
    // between a parent and its children are allowed, so they are dropped before looking for
    // cycles.
    let paths: BTreeMap<PathBuf, Vec<String>> =
        modules().into_iter().map(|m| (m.file, m.path)).collect();
    let is_parent = |a: &PathBuf, b: &PathBuf| {
        let (pa, pb) = (&paths[a], &paths[b]);
        pb.len() == pa.len() + 1 && pb.starts_with(pa)
    };
    let edges: BTreeMap<&PathBuf, Vec<&PathBuf>> = graph
        .iter()
        .map(|(a, ts)| {
            (
                a,
                ts.iter()
                    .filter(|b| !is_parent(a, b) && !is_parent(b, a))
                    .collect(),
            )
        })
        .collect();
    let cycles = strongly_connected(&edges);
    let shown: Vec<String> = cycles
        .iter()
        .map(|c| c.iter().map(|f| rel(f)).collect::<Vec<_>>().join(" <-> "))
        .collect();
    assert!(
        shown.is_empty(),
        "files that import each other:\n{}",
        shown.join("\n")
    );
}

/// The strongly connected components of more than one file (Tarjan's algorithm).
fn strongly_connected<'a>(
    edges: &BTreeMap<&'a PathBuf, Vec<&'a PathBuf>>,
) -> Vec<Vec<&'a PathBuf>> {
    struct State<'a> {
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<&'a PathBuf>>,
    }
    fn visit<'a>(
        v: &'a PathBuf,
        edges: &BTreeMap<&'a PathBuf, Vec<&'a PathBuf>>,
        s: &mut State<'a>,
    ) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, edges, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(v, edges, &mut s);
        }
    }
    s.out
}

#[test]
fn the_checker_sees_imports_through_use_trees_and_super() {
    let code = code_of(
        "use crate::engine::{request::Request, scheduler::{batch::Batch, Scheduler as S}};\n\
         use super::step::StepInput; // crate::cli::nothing\n\
         #[cfg(test)]\nmod tests { use crate::server::x; }\n\
         fn f() { crate::model::llama::forward(\"crate::sim::no\"); }",
    );
    let paths: Vec<String> = paths_in(&code).iter().map(|p| p.join("::")).collect();
    for want in [
        "crate::engine::request::Request",
        "crate::engine::scheduler::batch::Batch",
        "crate::engine::scheduler::Scheduler",
        "super::step::StepInput",
        "crate::model::llama::forward",
    ] {
        assert!(
            paths.contains(&want.to_string()),
            "{want} missing from {paths:?}"
        );
    }
    for unwanted in ["cli", "server", "sim"] {
        assert!(
            !paths.iter().any(|p| p.contains(unwanted)),
            "{unwanted}: comments, strings and test modules must be skipped: {paths:?}"
        );
    }
    let executor = Module {
        file: root().join("engine/executor.rs"),
        path: vec!["engine".into(), "executor".into()],
    };
    let to = |p: &str| {
        let segs: Vec<String> = p.split("::").map(String::from).collect();
        resolve(&executor, false, &BTreeSet::new(), &segs).map(|f| rel(&f))
    };
    assert_eq!(
        to("super::scheduler::batch::Batch").as_deref(),
        Some("engine/scheduler/batch.rs")
    );
    assert_eq!(
        to("crate::device::step::StepInput").as_deref(),
        Some("device/step.rs")
    );
    assert_eq!(
        to("crate::engine::Engine").as_deref(),
        Some("engine/mod.rs")
    );
    assert_eq!(to("std::sync::Arc"), None);
}
