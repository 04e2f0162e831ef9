//! The library crates' modules form layers: no module reaches, through the code of the modules
//! it names, back to itself.
//!
//! A module depends on another when its code names `crate::other` anywhere: in a `use` line, a
//! grouped `use crate::{a, b::C}`, or a fully qualified path in an expression or a type. A name
//! the crate root re-exports (`crate::Writer`) counts as a dependency on the module that defines
//! it (a module of the same name wins: `crate::store` is the module, not the function
//! `store` the root re-exports). Comments, doc comments included, are not code: a doc link may point anywhere.
//! Submodules count as their top-level module; `tests/` folders are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules of a crate's `src/`, each with the text of its files.
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).expect("read a source folder") {
            let path = entry.expect("read a folder entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "tests") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut modules = BTreeMap::<String, String>::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("a file under src");
        let first = rel.components().next().expect("a path").as_os_str();
        let name = first.to_string_lossy().trim_end_matches(".rs").to_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let text = fs::read_to_string(&file).expect("read a source file");
        modules
            .entry(name)
            .or_default()
            .push_str(&without_comments(&text));
    }
    modules
}

/// The text with `//` comments (doc comments included) and `/* */` comments blanked, and
/// string literals kept: a `crate::` inside a string is not a dependency either, but no
/// library writes one.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if let Some(after) = rest.strip_prefix("r#\"") {
            rest = after.find("\"#").map_or("", |end| &after[end + 2..]);
            out.push_str("\"\"");
        } else if let Some(after) = rest.strip_prefix('\'') {
            // A char literal ('"', '\'', 'x') is skipped; a lifetime ('a) is kept.
            let mut chars = after.chars();
            match (chars.next(), chars.next()) {
                (Some('\\'), _) => {
                    let end = after[2..].find('\'').map_or(after.len(), |at| at + 3);
                    rest = &after[end..];
                }
                (Some(c), Some('\'')) => rest = &after[c.len_utf8() + 1..],
                _ => {
                    out.push('\'');
                    rest = after;
                }
            }
        } else if let Some(after) = rest.strip_prefix('"') {
            // Skip a string literal whole, so a "//" inside one does not start a comment.
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = at + 1;
                        break;
                    }
                    _ => {}
                }
            }
            out.push_str("\"\"");
            rest = &after[end..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The first identifier of `text`.
fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// What `crate::` paths in `code` name first: `crate::a::B` names `a`, `crate::{a, b::C}` names
/// `a` and `b`.
fn named(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `kache_store::x` or `some_crate::x` are other crates.
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let after = &code[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            // Top-level items of the group: split on commas outside braces.
            let mut depth = 0;
            let mut start = 0;
            let group = &group[..end];
            for (i, c) in group.char_indices().chain([(group.len(), ',')]) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name = ident(group[start..i].trim());
                        if !name.is_empty() {
                            names.insert(name.to_owned());
                        }
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The items the crate root re-exports (`pub use module::{A, B}` / `pub use module::A`), mapped
/// to their module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for (at, _) in lib.match_indices("pub use ") {
        let after = &lib[at + "pub use ".len()..];
        let module = ident(after);
        let Some(path) = after[module.len()..].strip_prefix("::") else {
            continue;
        };
        let items = match path.strip_prefix('{') {
            Some(group) => &group[..group.find('}').unwrap_or(group.len())],
            None => &path[..path.find(';').unwrap_or(path.len())],
        };
        for item in items.split(',') {
            let item = item.trim();
            let last = item.rsplit("::").next().unwrap_or(item);
            let name = last.rsplit(" as ").next().unwrap_or(last).trim();
            if !name.is_empty() {
                owners.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    owners
}

/// The cycles (strongly connected components of more than one module) of `graph`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    // Two modules share a cycle when each reaches the other.
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(module) = todo.pop() {
            for next in &graph[&module] {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|module| (module, reach(module))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (module, reached) in &reaches {
        if !reached.contains(*module) || found.iter().any(|cycle| cycle.contains(*module)) {
            continue;
        }
        let cycle = reached
            .iter()
            .filter(|other| reaches[other].contains(*module))
            .cloned()
            .collect();
        found.push(cycle);
    }
    found
}

/// Each module's dependencies on the other modules of the crate at `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let owners = reexports(&without_comments(
        &fs::read_to_string(src.join("lib.rs")).expect("read lib.rs"),
    ));
    modules
        .iter()
        .map(|(module, code)| {
            let deps = named(code)
                .into_iter()
                .map(|name| match owners.get(&name) {
                    Some(owner) if !modules.contains_key(&name) => owner.clone(),
                    _ => name,
                })
                .filter(|dep| dep != module && modules.contains_key(dep))
                .collect();
            (module.clone(), deps)
        })
        .collect()
}

#[test]
fn library_modules_have_no_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut report = Vec::new();
    let mut checked = 0;
    for entry in fs::read_dir(&crates).expect("read crates/") {
        let src = entry.expect("read crates/").path().join("src");
        if !src.join("lib.rs").exists() {
            continue;
        }
        checked += 1;
        let graph = graph(&src);
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|module| {
                    graph[module]
                        .iter()
                        .filter(|dep| cycle.contains(*dep))
                        .map(move |dep| format!("{module} -> {dep}"))
                })
                .collect();
            report.push(format!(
                "{}: {} modules in one cycle: {}",
                src.parent().unwrap().file_name().unwrap().to_string_lossy(),
                cycle.len(),
                edges.join(", ")
            ));
        }
    }
    assert!(checked >= 3, "found {checked} library crates under crates/");
    assert!(report.is_empty(), "module cycles:\n{}", report.join("\n"));
}

#[test]
fn the_check_sees_every_kind_of_path() {
    let code = without_comments(
        "use crate::a::X;\n\
         use crate::{b, c::{D, E}};\n\
         fn f() -> crate::d::F { kache_store::crate_like::G }\n\
         /// [`H`](crate::e::H)\n\
         // crate::f\n\
         const S: &str = \"// not a comment\"; fn g<'a>() { crate::g::h('\"') }\n\
         const Q: char = '\\''; fn i() { crate::i::j() }\n",
    );
    let names = named(&code);
    let expected: BTreeSet<String> = ["a", "b", "c", "d", "g", "i"].map(String::from).into();
    assert_eq!(names, expected);

    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_owned(), deps.into_iter().map(String::from).collect()))
    .collect();
    let found = cycles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], ["a", "b", "c"].map(String::from).into());

    let owners = reexports("pub use writer::{Writer, Flush as F};\npub use key::ObjectKey;\n");
    assert_eq!(owners["Writer"], "writer");
    assert_eq!(owners["F"], "writer");
    assert_eq!(owners["ObjectKey"], "key");
}
