//! House rules that check themselves (#23): every module of the library is in
//! the code map of `src/lib.rs` and has its own entry in `ARCHITECTURE.md`.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_module_is_in_both_code_maps() {
    let lib = read("src/lib.rs");
    let architecture = read("ARCHITECTURE.md");
    let modules: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|l| l.trim_end_matches(';').trim()).collect();
    assert!(modules.len() > 20, "{modules:?}");
    let mut missing = Vec::new();
    for m in &modules {
        if !lib.contains(&format!("//! - [`{m}`]")) {
            missing.push(format!("src/lib.rs's code map lacks `//! - [`{m}`]: …`"));
        }
        if !architecture.contains(&format!("**`{m}`**")) {
            missing.push(format!("ARCHITECTURE.md lacks an entry **`{m}`** — …"));
        }
    }
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
