//! `recoup token`: make a bearer token for `recoup serve --tokens`.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::process::ExitCode;

use crate::serve::auth::new_token;

/// Make a random bearer token and print its entry for the tokens file (stdout;
/// only the SHA-256 hash goes there) and the token itself (stderr, once: store it
/// in the client's secret store, it cannot be recovered from the file).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  recoup token --name billing --scopes decide,read >> tokens.toml\n  recoup token --name ops --scopes admin >> tokens.toml\n  recoup serve --tokens tokens.toml\n  grpcurl -H 'authorization: Bearer rcp_…' … recoup.v1.RetryDecider/Decide"
)]
pub struct Args {
    /// A name for the token's holder (shown in logs and refusals).
    #[arg(long, env = "RECOUP_TOKEN_NAME")]
    pub name: String,
    /// Comma-separated scopes: decide (Decide, DecideBatch, hyperswitch's decider),
    /// read (GetModel, reflection), admin (hyperswitch's trainer).
    #[arg(long, value_parser = super::serve::scopes_arg, env = "RECOUP_TOKEN_SCOPES")]
    pub scopes: super::serve::Scopes,
}

/// Run `recoup token`.
pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!a.scopes.0.is_empty(), "--scopes: give at least one of decide, read, admin");
    anyhow::ensure!(
        !a.name.trim().is_empty() && !a.name.contains(['"', '\\', '\n']),
        "--name: a non-empty name without quotes, backslashes or newlines"
    );
    let (token, hash) = new_token();
    let scopes: Vec<String> = a.scopes.0.iter().map(|s| format!("\"{s}\"")).collect();
    println!("[[token]]\nname = \"{}\"\nsha256 = \"{hash}\"\nscopes = [{}]\n", a.name.trim(), scopes.join(", "));
    eprintln!("token for {:?} (shown once; the file keeps only its hash):\n{token}", a.name.trim());
    Ok(ExitCode::SUCCESS)
}
