//! The crate reads bottom-up: no file imports, however indirectly, a file that imports it, and no
//! file holds more than one job's worth of code (about 400 lines outside its tests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 400;

/// Every source file under `src/`, by module path (`store::holds`, `lib` for the root).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("an entry").path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            if path.is_dir() {
                let mut prefix = prefix.to_vec();
                prefix.push(stem);
                walk(&path, &prefix, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut name = prefix.to_vec();
                if stem != "mod" && stem != "lib" {
                    name.push(stem);
                }
                let name = if name.is_empty() {
                    "lib".to_owned()
                } else {
                    name.join("::")
                };
                out.insert(name, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// The code of a file: its unit tests and its comments left out.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a source file");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a module's code names: `crate::a::b::…` and `super::x`, each resolved to the
/// longest module path that exists.
fn imports(module: &str, code: &str, all: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let resolve = |parts: Vec<&str>| {
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|candidate| all.contains_key(candidate))
    };
    let parent: Vec<&str> = module.split("::").collect();
    let is_dir_module = all[module].ends_with("mod.rs");
    let mut found = BTreeSet::new();
    for (marker, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            let keep = if is_dir_module {
                parent.len().saturating_sub(1)
            } else {
                parent.len() - 1
            };
            parent[..keep].to_vec()
        }),
    ] {
        for occurrence in code.split(marker).skip(1) {
            let path: String = occurrence
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts = base.clone();
            parts.extend(path.split("::").filter(|p| !p.is_empty()));
            if let Some(target) = resolve(parts) {
                found.insert(target);
            }
        }
    }
    found.remove(module);
    found.remove("lib");
    found
}

#[test]
fn every_import_points_one_way() {
    let all = modules();
    let graph: BTreeMap<String, BTreeSet<String>> = all
        .iter()
        .map(|(module, path)| (module.clone(), imports(module, &code(path), &all)))
        .collect();
    // Depth-first search for a back edge: a module reached again while still on the path.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[at..].iter().map(|m| m.to_string()).collect();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in &graph[module] {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("an import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn no_file_holds_more_than_one_jobs_worth_of_code() {
    for (module, path) in modules() {
        let text = std::fs::read_to_string(&path).expect("a source file");
        let lines = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .count();
        assert!(
            lines <= MAX_LINES,
            "{module} has {lines} lines outside its tests (over {MAX_LINES})"
        );
    }
}
