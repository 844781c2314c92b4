//! The workspace's module structure, checked on every run:
//!
//! - no import circles: within every module of every library crate, the child modules (with
//!   everything below them) depend on each other without a cycle (`a` uses `b` and `b` uses
//!   `a`, directly or through others, fails; a child using its own ancestors or descendants
//!   is containment, not a circle);
//! - the agent's layers point one way: `core` ← `infra` ← `capabilities` ← `frontends` ←
//!   `app`/`ctl`; no module uses a layer above its own.
//!
//! Every `crate::`, `super::` and `self::` path in the code (imports and paths in expressions
//! and types, parsed with `syn`; comments and docs are not code) is resolved to the deepest
//! module it names. Re-exports are followed one level only by name, so a path through a
//! parent's `pub use` counts as using the parent — which can only hide a circle between
//! siblings, never invent one.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

type ModPath = Vec<String>;

/// A use of module `to` from module `from`, at `file:line` for the report.
#[derive(Debug, Clone)]
struct Edge {
    from: ModPath,
    to: ModPath,
    site: String,
}

/// The modules of one library crate and the uses between them.
#[derive(Debug, Default)]
struct Crate {
    modules: BTreeSet<ModPath>,
    edges: Vec<Edge>,
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_owned()),
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // Binaries are crates of their own that use the library by name.
            if path.file_name().is_some_and(|n| n == "bin") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Collects the `crate::`/`super::`/`self::` paths of one file.
struct Paths {
    /// Inline `mod x { … }` nesting (e.g. `mod tests`): `super` there is the file's module.
    inline_depth: usize,
    found: Vec<(Vec<String>, usize, usize)>,
}

impl Paths {
    fn push(&mut self, segments: Vec<String>, line: usize) {
        if matches!(
            segments.first().map(String::as_str),
            Some("crate" | "super" | "self")
        ) {
            self.found.push((segments, line, self.inline_depth));
        }
    }
}

fn use_tree(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_tree(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.clone();
            if n.ident != "self" {
                full.push(n.ident.to_string());
            }
            out.push(full);
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            full.push(r.ident.to_string());
            out.push(full);
        }
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_tree(t, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut all = Vec::new();
        use_tree(&u.tree, &mut Vec::new(), &mut all);
        let line = u.use_token.span.start().line;
        for p in all {
            self.push(p, line);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = p
            .segments
            .first()
            .map(|s| s.ident.span().start().line)
            .unwrap_or(0);
        self.push(segments, line);
        syn::visit::visit_path(self, p);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.inline_depth += 1;
            syn::visit::visit_item_mod(self, m);
            self.inline_depth -= 1;
        }
    }
}

/// The deepest module of `modules` that `segments` (already absolute) names.
fn resolve(modules: &BTreeSet<ModPath>, segments: &[String]) -> ModPath {
    let mut best = Vec::new();
    for n in 1..=segments.len() {
        if modules.contains(&segments[..n].to_vec()) {
            best = segments[..n].to_vec();
        }
    }
    best
}

fn load_crate(src: &Path) -> Crate {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut krate = Crate::default();
    let mut parsed = Vec::new();
    for file in &files {
        krate.modules.insert(module_of(src, file));
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        parsed.push((file.clone(), ast));
    }
    for (file, ast) in parsed {
        let here = module_of(src, &file);
        let mut paths = Paths {
            inline_depth: 0,
            found: Vec::new(),
        };
        paths.visit_file(&ast);
        for (segments, line, depth) in paths.found {
            let mut absolute: Vec<String> = Vec::new();
            let mut rest = segments.as_slice();
            match rest[0].as_str() {
                "crate" => rest = &rest[1..],
                _ => {
                    absolute = here.clone();
                    // Inside an inline module, the first `super` is the file's module.
                    let mut skip_super = depth > 0;
                    loop {
                        match rest.first().map(String::as_str) {
                            Some("self") => rest = &rest[1..],
                            Some("super") if skip_super => {
                                skip_super = false;
                                rest = &rest[1..];
                            }
                            Some("super") => {
                                absolute.pop();
                                rest = &rest[1..];
                            }
                            _ => break,
                        }
                    }
                }
            }
            absolute.extend(rest.iter().cloned());
            let to = resolve(&krate.modules, &absolute);
            krate.edges.push(Edge {
                from: here.clone(),
                to,
                site: format!("{}:{line}", file.display()),
            });
        }
    }
    krate
}

/// Cycles among sibling subtrees: for every edge, the children of the two ends' deepest
/// common ancestor. Returns each cycle as the sites that make it.
fn sibling_cycles(krate: &Crate) -> Vec<String> {
    // parent → (child → (child → first site))
    let mut levels: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
    for e in &krate.edges {
        let common = e.from.iter().zip(&e.to).take_while(|(a, b)| a == b).count();
        if common == e.from.len() || common == e.to.len() {
            continue; // ancestor or descendant: containment
        }
        levels
            .entry(e.from[..common].to_vec())
            .or_default()
            .entry(e.from[common].clone())
            .or_default()
            .entry(e.to[common].clone())
            .or_insert_with(|| e.site.clone());
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &levels {
        // Depth-first search for a back edge.
        fn dfs(
            node: &str,
            graph: &BTreeMap<String, BTreeMap<String, String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
            found: &mut Option<Vec<String>>,
        ) {
            if found.is_some() || done.contains(node) {
                return;
            }
            if let Some(i) = stack.iter().position(|n| n == node) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(node.to_owned());
                *found = Some(cycle);
                return;
            }
            stack.push(node.to_owned());
            for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
                dfs(next, graph, stack, done, found);
            }
            stack.pop();
            done.insert(node.to_owned());
        }
        let mut done = BTreeSet::new();
        for start in graph.keys() {
            let mut found = None;
            dfs(start, graph, &mut Vec::new(), &mut done, &mut found);
            if let Some(cycle) = found {
                let sites: Vec<String> = cycle
                    .windows(2)
                    .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                    .collect();
                cycles.push(format!("in {}: {}", parent.join("::"), sites.join(", ")));
            }
        }
    }
    cycles
}

/// The agent's layers, lowest first; modules of one rank may use each other (without circles).
const AGENT_LAYERS: &[(&str, u8)] = &[
    ("core", 0),
    ("infra", 1),
    ("capabilities", 2),
    ("frontends", 3),
    ("app", 4),
    ("ctl", 4),
];

fn rank(m: &ModPath) -> Option<u8> {
    let top = m.first()?;
    AGENT_LAYERS
        .iter()
        .find(|(name, _)| name == top)
        .map(|(_, r)| *r)
}

fn upward_uses(krate: &Crate) -> Vec<String> {
    krate
        .edges
        .iter()
        .filter_map(|e| match (rank(&e.from), rank(&e.to)) {
            (Some(from), Some(to)) if to > from => Some(format!(
                "{} uses {} ({})",
                e.from.join("::"),
                e.to.join("::"),
                e.site
            )),
            _ => None,
        })
        .collect()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut all = Vec::new();
    for krate in ["agent", "helper", "localapi-gateway", "proto", "tests"] {
        let src = workspace().join(krate).join("src");
        for cycle in sibling_cycles(&load_crate(&src)) {
            all.push(format!("{krate}: {cycle}"));
        }
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}

#[test]
fn every_agent_module_belongs_to_a_layer() {
    let krate = load_crate(&workspace().join("agent/src"));
    let unranked: Vec<String> = krate
        .modules
        .iter()
        .filter(|m| !m.is_empty() && rank(m).is_none())
        .map(|m| m.join("::"))
        .collect();
    assert!(
        unranked.is_empty(),
        "modules outside the layers: {unranked:?}"
    );
}

#[test]
fn no_agent_module_uses_a_layer_above_its_own() {
    let krate = load_crate(&workspace().join("agent/src"));
    let up = upward_uses(&krate);
    assert!(up.is_empty(), "upward uses:\n{}", up.join("\n"));
}

/// The checker itself: a circle and an upward use written into a scratch crate are found.
#[test]
fn the_checker_finds_a_circle_and_an_upward_use() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("infra")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "pub mod core; pub mod infra; pub mod app;",
    )
    .unwrap();
    std::fs::write(src.join("core.rs"), "pub struct Id;").unwrap();
    std::fs::write(src.join("app.rs"), "pub struct Config;").unwrap();
    std::fs::write(src.join("infra/mod.rs"), "pub mod a; pub mod b;").unwrap();
    std::fs::write(
        src.join("infra/a.rs"),
        "use super::b::B;\npub struct A(crate::core::Id);",
    )
    .unwrap();
    std::fs::write(
        src.join("infra/b.rs"),
        "pub struct B;\nfn f() -> crate::infra::a::A { todo!() }\nfn g(_: crate::app::Config) {}",
    )
    .unwrap();
    let krate = load_crate(src);
    let cycles = sibling_cycles(&krate);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].starts_with("in infra: a -> b ("), "{cycles:?}");
    let up = upward_uses(&krate);
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(up[0].starts_with("infra::b uses app ("), "{up:?}");
}
