//! House rules that check themselves (#23): the core crate stays pure, every
//! module of both library crates is in its crate's code map and in
//! `ARCHITECTURE.md`, and every module's doc says which side of the boundary it is on.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The crates and modules the core must never use: I/O, async runtimes, the RPC
/// stack, the CLI parser, dynamic errors, the clock.
const NOT_IN_CORE: [&str; 12] = [
    "polars",
    "tokio",
    "tonic",
    "clap",
    "anyhow",
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "Utc::now",
    "SystemTime",
    "Instant::now",
];

/// The modules a crate declares (`pub mod x;` in its lib.rs), and for the root crate the
/// core modules it re-exports (`pub use recoup_core::{…};`).
fn declared(lib: &str) -> Vec<String> {
    lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|l| l.trim_end_matches(';').trim().to_string()).collect()
}

/// The source file of a top-level module.
fn module_file(dir: &str, m: &str) -> String {
    let flat = format!("{dir}/{m}.rs");
    if Path::new(env!("CARGO_MANIFEST_DIR")).join(&flat).exists() {
        flat
    } else {
        format!("{dir}/{m}/mod.rs")
    }
}

#[test]
fn the_core_crate_depends_on_no_io_crate_and_its_sources_use_none() {
    let manifest = read("crates/recoup-core/Cargo.toml");
    let deps = manifest.split("[dependencies]").nth(1).expect("a [dependencies] table").split("\n[").next().unwrap_or_default();
    let mut found = Vec::new();
    for name in NOT_IN_CORE.iter().filter(|n| !n.contains("::")) {
        if deps.lines().any(|l| l.trim_start().starts_with(name)) {
            found.push(format!("crates/recoup-core/Cargo.toml depends on {name}"));
        }
    }
    let lib = read("crates/recoup-core/src/lib.rs");
    let modules = declared(&lib);
    assert!(modules.len() >= 12, "{modules:?}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/recoup-core/src");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() > 20, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for name in NOT_IN_CORE {
                let pattern = if name.contains("::") { name.to_string() } else { format!("{name}::") };
                if code.contains(&pattern) {
                    found.push(format!("{}:{}: uses {name}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "the core must stay pure (#23):\n{}", found.join("\n"));
}

#[test]
fn every_module_is_in_both_code_maps_and_says_its_side() {
    let architecture = read("ARCHITECTURE.md");
    let mut missing = Vec::new();
    let mut total = 0;
    for (lib_path, dir, sides) in
        [("crates/recoup-core/src/lib.rs", "crates/recoup-core/src", &["core"][..]), ("src/lib.rs", "src", &["learning", "edge"][..])]
    {
        let lib = read(lib_path);
        let modules = declared(&lib);
        total += modules.len();
        for m in &modules {
            if !lib.contains(&format!("//! - [`{m}`]")) {
                missing.push(format!("{lib_path}'s code map lacks `//! - [`{m}`]: …`"));
            }
            if !architecture.contains(&format!("**`{m}`**")) {
                missing.push(format!("ARCHITECTURE.md lacks an entry **`{m}`** — …"));
            }
            let file = module_file(dir, m);
            let side =
                read(&file).lines().take_while(|l| l.starts_with("//!")).find_map(|l| l.strip_prefix("//! Side: ")).map(str::to_string);
            match side {
                Some(s) if sides.iter().any(|want| s.starts_with(want)) => {}
                Some(s) => missing.push(format!("{file}: \"Side: {s}\" but modules of {lib_path} are {}", sides.join(" or "))),
                None => missing.push(format!("{file}: the module doc lacks a line \"//! Side: {}…\"", sides.join("|"))),
            }
        }
    }
    assert!(total > 30, "{total} modules");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Every flag of every subcommand can also be set by an environment variable (#25: a
/// container is configured by its environment); `--verbose`, a counter, is the one exception.
#[test]
fn every_flag_has_an_environment_variable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/cli") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.starts_with("#[arg(") && !l.contains("env = \"RECOUP_") && !l.contains("ArgAction::Count") {
                missing.push(format!("{}:{}: {l}", path.display(), i + 1));
            }
        }
    }
    // A field of a clap struct without any #[arg] (a positional) has no variable either.
    for entry in std::fs::read_dir(&dir).expect("src/cli") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        let lines: Vec<&str> = text.lines().collect();
        let mut in_args = false;
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("#[derive(") {
                in_args = line.contains("clap::Args") || line.contains("Parser");
            }
            if line.starts_with('}') {
                in_args = false;
            }
            if in_args && line.trim_start().starts_with("pub ") && line.contains(':') && !line.contains("fn ") {
                let attr = lines[..i].iter().rev().map(|l| l.trim()).find(|l| !l.starts_with("///")).unwrap_or("");
                if !(attr.starts_with("#[arg(") || attr.starts_with("#[command(")) {
                    missing.push(format!("{}:{}: {} (no #[arg(env = …)])", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "flags without env = \"RECOUP_…\":\n{}", missing.join("\n"));
}

/// Every `.rs` file under `dir` (recursively).
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (lines, name, first line) of every function in `text` outside its unit tests
/// (`#[cfg(test)] mod tests` to the end). A function runs from its `fn` line to the
/// first line that is its indentation and a closing brace (the code is rustfmt'ed).
fn function_lengths(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| lines[i].starts_with("#[cfg(test)]") && lines.get(i + 1).is_some_and(|l| l.starts_with("mod ")))
        .unwrap_or(lines.len());
    let mut out = Vec::new();
    for i in 0..end {
        let line = lines[i];
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut rest = line.trim_start();
        for prefix in ["pub(crate) ", "pub(super) ", "pub ", "const ", "async ", "unsafe "] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let Some(sig) = rest.strip_prefix("fn ") else { continue };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = sig.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let close = format!("{indent}}}");
        if let Some(j) = (i..end).find(|&j| lines[j] == close) {
            out.push((j - i + 1, name, i + 1));
        }
    }
    out
}

/// No function outside tests is longer than 120 lines (#23): a longer one is doing
/// several jobs that deserve names. The longest are printed (`cargo test tidy -- --nocapture`).
#[test]
fn no_function_outside_tests_is_over_120_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "crates/recoup-core/src", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.push(root.join("build.rs"));
    let mut all: Vec<(usize, String)> = Vec::new();
    for path in files.iter().filter(|p| !p.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(path).expect("readable");
        let rel = path.strip_prefix(root).unwrap_or(path).display().to_string();
        all.extend(function_lengths(&text).into_iter().map(|(n, name, line)| (n, format!("{rel}:{line} {name}"))));
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.0));
    assert!(all.len() > 500, "only {} functions found: the scan is broken", all.len());
    for (n, at) in all.iter().take(5) {
        println!("{n:>4} lines  {at}");
    }
    let long: Vec<String> = all.iter().filter(|(n, _)| *n > 120).map(|(n, at)| format!("{n} lines: {at}")).collect();
    assert!(long.is_empty(), "functions over 120 lines (split them into named steps):\n{}", long.join("\n"));
    // The scan measures what it claims: a function of 121 lines is caught.
    let long_fn = format!("fn f() {{\n{}}}\n", "    x();\n".repeat(119));
    assert_eq!(function_lengths(&long_fn), vec![(121, "f".to_string(), 1)]);
}

/// The modules of this crate a module's files name (`crate::x` or `use crate::{x, …}`),
/// outside its unit tests.
fn module_deps(dir: &Path, m: &str, modules: &[String]) -> Vec<String> {
    let mut files = Vec::new();
    if dir.join(format!("{m}.rs")).exists() {
        files.push(dir.join(format!("{m}.rs")));
    }
    if dir.join(m).is_dir() {
        rust_files(&dir.join(m), &mut files);
    }
    let mut deps = Vec::new();
    for f in files.iter().filter(|p| !p.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(f).expect("readable");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    // `use crate::{a::X, b, c::{Y, Z}}`: the first name of each top-level item.
                    Some(list) => list.split(',').map(|s| s.trim().trim_start_matches('{')).collect(),
                    None => vec![rest],
                };
                for n in names {
                    let name: String = n.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect();
                    if name != m && modules.contains(&name) && !deps.contains(&name) {
                        deps.push(name);
                    }
                }
            }
        }
    }
    deps
}

/// Data flows one way (#23): no two modules of a crate depend on each other, directly
/// or through others. A cycle is printed as the modules on it.
#[test]
fn no_module_depends_on_itself_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cycles = Vec::new();
    for (lib, dir) in [("crates/recoup-core/src/lib.rs", "crates/recoup-core/src"), ("src/lib.rs", "src")] {
        let modules = declared(&read(lib));
        let deps: Vec<Vec<usize>> = modules
            .iter()
            .map(|m| module_deps(&root.join(dir), m, &modules).iter().filter_map(|d| modules.iter().position(|x| x == d)).collect())
            .collect();
        // A module is on a cycle when it reaches itself.
        for start in 0..modules.len() {
            let (mut seen, mut stack, mut path_to) = (vec![false; modules.len()], vec![start], vec![usize::MAX; modules.len()]);
            while let Some(v) = stack.pop() {
                for &w in &deps[v] {
                    if w == start {
                        let mut cycle = vec![modules[start].clone()];
                        let mut at = v;
                        while at != start {
                            cycle.push(modules[at].clone());
                            at = path_to[at];
                        }
                        cycle.reverse();
                        cycles.push(format!("{dir}: {} → {}", modules[start], cycle.join(" → ")));
                        stack.clear();
                        break;
                    }
                    if !seen[w] {
                        seen[w] = true;
                        path_to[w] = v;
                        stack.push(w);
                    }
                }
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
    // The scan sees the dependencies it must: the engine uses the rules, the CLI the model store.
    let core = declared(&read("crates/recoup-core/src/lib.rs"));
    assert!(module_deps(&root.join("crates/recoup-core/src"), "engine", &core).contains(&"rules".to_string()));
    let outer = declared(&read("src/lib.rs"));
    assert!(module_deps(&root.join("src"), "cli", &outer).contains(&"model_store".to_string()));
}

/// Errors are typed (#23): the library returns one thiserror enum per boundary
/// (`train::FitError`, `pipeline::PipelineError`, `decision_log::LogError`,
/// `registry::RegistryError`, `history::LoadError`…); anyhow, which erases them, is
/// only for the binary's commands (`src/cli/`, `src/main.rs`).
#[test]
fn anyhow_is_only_used_by_the_commands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("crates/recoup-core/src"), &mut files);
    let mut found = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root).unwrap_or(path);
        if rel.starts_with("src/cli") || rel.ends_with("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("readable");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains("anyhow::") || code.contains("use anyhow") {
                found.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(files.len() > 60, "{} files", files.len());
    assert!(found.is_empty(), "anyhow outside the commands:\n{}", found.join("\n"));
}

/// Errors become gRPC statuses in exactly one place (#23): `api::CallError` and its
/// `From<CallError> for Status`. Handlers, the guard and the trainer name the case.
#[test]
fn grpc_statuses_are_made_in_one_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let constructors = [
        "invalid_argument(",
        "internal(",
        "failed_precondition(",
        "not_found(",
        "resource_exhausted(",
        "unavailable(",
        "deadline_exceeded(",
        "permission_denied(",
        "unauthenticated(",
        "already_exists(",
        "cancelled(",
        "unimplemented(",
        "unknown(",
        "out_of_range(",
        "aborted(",
        "new(",
    ];
    let mut found = Vec::new();
    let mut in_api = 0;
    for path in &files {
        let rel = path.strip_prefix(root).unwrap_or(path);
        let text = std::fs::read_to_string(path).expect("readable");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        for (i, line) in code.lines().enumerate() {
            let made = constructors.iter().any(|c| line.contains(&format!("Status::{c}")));
            if made && rel == Path::new("src/api.rs") {
                in_api += 1;
            } else if made {
                found.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(in_api >= 10, "api.rs makes {in_api} statuses: the scan is broken");
    assert!(found.is_empty(), "statuses made outside api::CallError:\n{}", found.join("\n"));
}

/// Every source file's module doc says which side of the boundary it is on (#23), not
/// only the top-level modules': a file of the core crate says core; one of the root
/// crate says learning or edge (a submodule may differ from its parent's side only in
/// the root crate). The code maps (`lib.rs`) and test files are exempt.
#[test]
fn every_source_file_says_its_side() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let mut seen = 0;
    for (dir, sides) in [("crates/recoup-core/src", &["core"][..]), ("src", &["learning", "edge"][..])] {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for path in files.iter().filter(|p| !p.ends_with("lib.rs") && !p.ends_with("tests.rs")) {
            seen += 1;
            let text = std::fs::read_to_string(path).expect("readable");
            let rel = path.strip_prefix(root).unwrap_or(path).display().to_string();
            let side = text.lines().take_while(|l| l.starts_with("//!")).find_map(|l| l.strip_prefix("//! Side: "));
            match side {
                Some(s) if sides.iter().any(|want| s.starts_with(want)) => {}
                Some(s) => missing.push(format!("{rel}: \"Side: {s}\" but files under {dir} are {}", sides.join(" or "))),
                None => missing.push(format!("{rel}: the module doc lacks a line \"//! Side: {}…\"", sides.join("|"))),
            }
        }
    }
    assert!(seen > 60, "only {seen} files: the scan is broken");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
