//! The module tree draws the architecture (README, "Contributing"; docs/design.md): the
//! top-level modules of `src/` depend on each other in one direction only,
//! `cli → http → {store, cluster} → {graph, wal, snapshot} → {storage, contact, event}`, with no
//! cycle. A dependency is a `crate::MODULE` path in code (comments are not read), found by
//! reading the sources, so a new `use` that points upwards fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module's layer: a module may use modules of its own or lower layers only.
const LAYERS: [(&str, u8); 15] = [
    ("cli", 6),
    ("http", 5),
    ("cluster", 4),
    ("store", 3),
    ("rows", 3),
    ("graph", 2),
    ("wal", 2),
    ("snapshot", 2),
    ("storage", 1),
    ("event", 1),
    ("phone_region", 1),
    ("contact", 0),
    ("metrics", 0),
    ("alloc", 0),
    ("lib", 7),
];

/// `from → {to → first place it is used}` for every top-level module of `src/`.
fn dependencies() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let first = relative.iter().next().expect("a component");
            let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
            if module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(at) = rest.find("crate::") {
                    let target: String = rest[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[at + 7..];
                    if !target.is_empty() && target != module {
                        edges
                            .entry(module.clone())
                            .or_default()
                            .entry(target)
                            .or_insert_with(|| format!("{}:{}", relative.display(), number + 1));
                    }
                }
            }
        }
    }
    edges
}

#[test]
fn modules_depend_downwards_only_and_form_no_cycle() {
    let layers: BTreeMap<&str, u8> = LAYERS.into_iter().collect();
    let edges = dependencies();
    assert!(
        edges.contains_key("http") && edges.contains_key("store"),
        "{edges:?}"
    );
    let mut problems = Vec::new();
    for (from, targets) in &edges {
        let Some(&from_layer) = layers.get(from.as_str()) else {
            problems.push(format!("module {from} has no layer in this test"));
            continue;
        };
        for (to, place) in targets {
            match layers.get(to.as_str()) {
                Some(&to_layer) if to_layer <= from_layer => {}
                Some(_) => problems.push(format!("{from} uses the higher {to} at {place}")),
                None => problems.push(format!("{from} uses {to}, which has no layer ({place})")),
            }
        }
    }
    // Modules of one layer may use each other, but not in a cycle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            problems.push(format!("cycle: {} -> {node}", path[at..].join(" -> ")));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flat_map(BTreeMap::keys) {
            visit(next, edges, path, done, problems);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
