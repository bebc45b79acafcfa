//! Who may call what (edge): bearer tokens with scopes, read from a TOML file,
//! and the scopes granted without a token. Checked for every call in one place,
//! [`super::guard`], before any handler runs.
//!
//! The file holds SHA-256 hashes of the tokens, never the tokens themselves
//! (`recoup serve token` makes a token and its entry):
//!
//! ```toml
//! [[token]]
//! name = "billing-platform"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! scopes = ["decide", "read"]
//! ```
//!
//! A client sends `authorization: Bearer <token>` (or `x-api-key: <token>`).
//! A missing or unknown token answers `UNAUTHENTICATED`; a known token without
//! the method's scope answers `PERMISSION_DENIED`.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, strum::EnumString, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Scope {
    /// Ask for decisions and report their outcomes: `recoup.v1.RetryDecider/Decide`, `DecideBatch`,
    /// `ReportAttempts`, hyperswitch's `decider.Decider/Decide`.
    Decide,
    /// Read the serving model (`GetModel`) and the schema (server reflection).
    Read,
    /// Start training and read training jobs (hyperswitch's `trainer.TrainerService`).
    Admin,
}

/// The scope a gRPC method needs; `None` for methods anyone may call (health checks).
pub fn scope_of(path: &str) -> Option<Scope> {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match service {
        "grpc.health.v1.Health" => None,
        "recoup.v1.RetryDecider" if path.ends_with("/GetModel") => Some(Scope::Read),
        "recoup.v1.RetryDecider" | "decider.Decider" | "recoup.bench.v1.Echo" => Some(Scope::Decide),
        "trainer.TrainerService" => Some(Scope::Admin),
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => Some(Scope::Read),
        // Unknown services need the strongest scope: nothing is learned about the
        // server (not even that a path is unimplemented) without it.
        _ => Some(Scope::Admin),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    scopes: Vec<Scope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Clone)]
struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or unknown ones.
    Unauthenticated(String),
    /// Known credentials without the scope.
    PermissionDenied(String),
}

/// A token-file problem, naming the file and entry.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TokenFileError {
    file: String,
    message: String,
}

/// The access policy of a server.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<Token>,
    /// Scopes every caller has, token or not (never `admin`).
    anonymous: Vec<Scope>,
}

impl Access {
    /// A policy from token entries (TOML text read from `file`) and the scopes granted without a token.
    pub fn new(tokens_toml: Option<(&Path, &str)>, anonymous: &[Scope]) -> Result<Access, TokenFileError> {
        let err = |file: &Path, message: String| TokenFileError { file: file.display().to_string(), message };
        if anonymous.contains(&Scope::Admin) {
            return Err(TokenFileError { file: "--anonymous-scopes".into(), message: "admin is never granted without a token".into() });
        }
        let mut tokens = Vec::new();
        if let Some((file, text)) = tokens_toml {
            let parsed: TokenFile = toml::from_str(text).map_err(|e| err(file, e.to_string()))?;
            for (i, t) in parsed.token.into_iter().enumerate() {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(t.sha256.trim(), &mut hash)
                    .map_err(|e| err(file, format!("token[{i}] ({:?}).sha256: not 64 hex digits ({e})", t.name)))?;
                if t.scopes.is_empty() {
                    return Err(err(file, format!("token[{i}] ({:?}).scopes: give at least one of decide, read, admin", t.name)));
                }
                if tokens.iter().any(|o: &Token| o.hash == hash) {
                    return Err(err(file, format!("token[{i}] ({:?}): the same token is listed twice", t.name)));
                }
                tokens.push(Token { name: t.name, hash, scopes: t.scopes });
            }
            if tokens.is_empty() {
                return Err(err(file, "no [[token]] entries".into()));
            }
        }
        Ok(Access { tokens, anonymous: anonymous.to_vec() })
    }

    /// Whether any token is configured.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Scopes granted without a token.
    pub fn anonymous(&self) -> &[Scope] {
        &self.anonymous
    }

    /// Allow or refuse a call to `path` with these request headers; on success,
    /// the name of the token used (empty when none was needed).
    pub fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<String, Refusal> {
        let Some(needed) = scope_of(path) else { return Ok(String::new()) };
        let presented = bearer(headers);
        if presented.is_none() && self.anonymous.contains(&needed) {
            return Ok(String::new());
        }
        let Some(token) = presented else {
            return Err(Refusal::Unauthenticated(format!(
                "{path} needs a token with the {needed} scope: send `authorization: Bearer <token>`"
            )));
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared in full, so the time taken says nothing about which matched.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if constant_time_eq(&t.hash, &hash) {
                found = Some(t);
            }
        }
        match found {
            None => Err(Refusal::Unauthenticated("unknown token".into())),
            Some(t) if t.scopes.contains(&needed) => Ok(t.name.clone()),
            Some(t) => Err(Refusal::PermissionDenied(format!("token {:?} lacks the {needed} scope that {path} needs", t.name))),
        }
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty())
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token (32 bytes from the OS-seeded CSPRNG, hex) and its SHA-256 hex.
pub fn new_token() -> (String, String) {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("rcp_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(a) = auth {
            h.insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    fn access(anonymous: &[Scope]) -> (Access, String, String) {
        let (decide_token, decide_hash) = new_token();
        let (admin_token, admin_hash) = new_token();
        let toml = format!(
            "[[token]]\nname = \"billing\"\nsha256 = \"{decide_hash}\"\nscopes = [\"decide\", \"read\"]\n\n[[token]]\nname = \"ops\"\nsha256 = \"{admin_hash}\"\nscopes = [\"admin\"]\n"
        );
        (Access::new(Some((Path::new("tokens.toml"), &toml)), anonymous).unwrap(), decide_token, admin_token)
    }

    #[test]
    fn methods_map_to_scopes() {
        assert_eq!(scope_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(scope_of("/recoup.v1.RetryDecider/Decide"), Some(Scope::Decide));
        assert_eq!(scope_of("/recoup.v1.RetryDecider/ReportAttempts"), Some(Scope::Decide), "outcomes come from the billing platform");
        assert_eq!(scope_of("/recoup.v1.RetryDecider/GetModel"), Some(Scope::Read));
        assert_eq!(scope_of("/decider.Decider/Decide"), Some(Scope::Decide));
        assert_eq!(scope_of("/trainer.TrainerService/TriggerTraining"), Some(Scope::Admin));
        assert_eq!(scope_of("/no.such.Service/X"), Some(Scope::Admin));
    }

    #[test]
    fn training_needs_an_admin_token_even_when_deciding_is_open() {
        let (a, decide, admin) = access(&[Scope::Decide, Scope::Read]);
        let train = "/trainer.TrainerService/TriggerTraining";
        assert!(matches!(a.check(train, &headers(None)), Err(Refusal::Unauthenticated(_))));
        assert!(matches!(a.check(train, &headers(Some(&format!("Bearer {decide}")))), Err(Refusal::PermissionDenied(_))));
        assert_eq!(a.check(train, &headers(Some(&format!("Bearer {admin}")))), Ok("ops".into()));
        assert_eq!(a.check("/recoup.v1.RetryDecider/Decide", &headers(None)), Ok(String::new()));
    }

    #[test]
    fn closed_policy_needs_a_known_token_for_decisions() {
        let (a, decide, _) = access(&[]);
        let path = "/recoup.v1.RetryDecider/Decide";
        assert!(matches!(a.check(path, &headers(None)), Err(Refusal::Unauthenticated(_))));
        assert!(matches!(a.check(path, &headers(Some("Bearer rcp_wrong"))), Err(Refusal::Unauthenticated(_))));
        assert_eq!(a.check(path, &headers(Some(&format!("bearer {decide}")))), Ok("billing".into()));
        let mut h = http::HeaderMap::new();
        h.insert("x-api-key", decide.parse().unwrap());
        assert_eq!(a.check(path, &h), Ok("billing".into()));
        assert_eq!(a.check("/grpc.health.v1.Health/Check", &headers(None)), Ok(String::new()), "probes need no token");
    }

    #[test]
    fn bad_token_files_are_refused_naming_the_entry() {
        let e = Access::new(Some((Path::new("t.toml"), "[[token]]\nname = \"x\"\nsha256 = \"abc\"\nscopes = [\"decide\"]\n")), &[])
            .unwrap_err();
        assert!(e.to_string().contains("token[0]") && e.to_string().contains("sha256"), "{e}");
        let e =
            Access::new(Some((Path::new("t.toml"), "[[token]]\nname = \"x\"\nsha256 = \"abc\"\nscopes = [\"root\"]\n")), &[]).unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
        assert!(Access::new(None, &[Scope::Admin]).is_err(), "admin is never anonymous");
    }
}
