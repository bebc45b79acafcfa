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
