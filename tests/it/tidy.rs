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
    for entry in std::fs::read_dir(&dir).expect("core sources") {
        let path = entry.expect("entry").path();
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
