//! The decision log's PostgreSQL sink: the same records as the Parquet files,
//! in the tables of `migrations/` (applied at start, once across replicas).
//!
//! The writer thread owns a synchronous client. A flush is one transaction
//! holding one binary `COPY` (the cheapest way in for the database's own CPU,
//! which on a shared host competes with the handlers; flushing every 20 ms,
//! [`super::LogTarget::default_flush`], keeps that work from coming in bursts), so
//! PostgreSQL's commit is the durability point: a
//! `kill -9` of the server loses at most the decisions answered since the last
//! commit, as with files. A failed write drops the connection; the next flush
//! reconnects. Text is stored as sent, except NUL (PostgreSQL's text cannot
//! hold it), which becomes U+FFFD. Connections are plain TCP (`NoTls`): run
//! the database on a private network, or through a TLS sidecar.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, NoTls};

use super::{Batch, Ctx, Decision, DecisionRecord, LogError, OutcomeRecord};

/// The migrations, in order: (version, SQL).
pub const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/0001_decision_log.sql"))];

/// Whether a decision-log target names a PostgreSQL database.
pub fn is_url(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

/// The URL without its password, for messages and logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connect and apply the migrations not yet applied.
pub fn connect(url: &str) -> Result<Client, LogError> {
    let mut client = Client::connect(url, NoTls).ctx(|| format!("connecting to the decision log database {}", redacted(url)))?;
    migrate(&mut client)?;
    Ok(client)
}

fn migrate(client: &mut Client) -> Result<(), LogError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS recoup_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .ctx(|| "creating recoup_schema_migrations".into())?;
    for (version, sql) in MIGRATIONS {
        let mut tx = client.transaction().ctx(|| "starting the migration".into())?;
        tx.batch_execute("LOCK TABLE recoup_schema_migrations IN EXCLUSIVE MODE").ctx(|| "locking the migrations".into())?;
        let done = tx
            .query_opt("SELECT version FROM recoup_schema_migrations WHERE version = $1", &[version])
            .ctx(|| "reading the migrations".into())?
            .is_some();
        if !done {
            tx.batch_execute(sql).ctx(|| format!("applying migration {version}"))?;
            tx.execute("INSERT INTO recoup_schema_migrations (version) VALUES ($1)", &[version])
                .ctx(|| format!("recording migration {version}"))?;
        }
        tx.commit().ctx(|| format!("committing migration {version}"))?;
    }
    Ok(())
}

fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The sink: a URL and, once connected, a client.
pub struct Sink {
    url: String,
    client: Option<Client>,
    writer: String,
}

impl Sink {
    /// Connect now (the server refuses to start on a database it cannot reach).
    pub fn open(url: &str, writer: &str) -> Result<Sink, LogError> {
        Ok(Sink { url: url.to_string(), client: Some(connect(url)?), writer: writer.to_string() })
    }

    fn client(&mut self) -> Result<&mut Client, LogError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.url)?);
        }
        self.client.as_mut().ctx(|| "no connection".into())
    }

    /// Run `f` in one transaction; on failure forget the connection (the next call reconnects).
    fn in_transaction(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<(), postgres::Error>,
    ) -> Result<(), LogError> {
        let result = (|| {
            let client = self.client()?;
            let mut tx = client.transaction().ctx(|| format!("{what}: starting a transaction"))?;
            f(&mut tx).ctx(|| what.to_string())?;
            tx.commit().ctx(|| format!("{what}: committing"))
        })();
        if result.is_err() {
            self.client = None;
        }
        result
    }

    pub fn write_decisions(&mut self, batch: &Batch, range: std::ops::Range<usize>) -> Result<(), LogError> {
        let rows: Vec<(Decision<'_>, &[u8])> = range.map(|i| (batch.row(i), batch.request(i))).collect();
        let writer = self.writer.clone();
        self.in_transaction("writing decisions to PostgreSQL", |tx| {
            let types = [
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::FLOAT8,
                Type::BYTEA,
                Type::TEXT,
            ];
            copy(
                tx,
                "recoup_decisions (decided_at, source, payment_id, customer_id, model_version, arm, action, next_step, retry_at, \
                 channel, p_success, p_recovery, propensity, request, writer)",
                &types,
                &rows,
                |w, (r, request)| {
                    w.write(&[
                        &r.decided_at,
                        &text(r.source),
                        &text(r.payment_id),
                        &text(r.customer_id),
                        &text(r.model_version),
                        &text(r.arm),
                        &text(r.action),
                        &text(r.next_step),
                        &r.retry_at,
                        &text(r.channel),
                        &r.p_success,
                        &r.p_recovery,
                        &r.propensity,
                        request,
                        &writer.as_str(),
                    ])
                },
            )
        })
    }

    pub fn write_outcomes(&mut self, rows: &[OutcomeRecord]) -> Result<(), LogError> {
        self.in_transaction("writing reported outcomes to PostgreSQL", |tx| {
            let types = [
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT4,
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::BOOL,
            ];
            copy(
                tx,
                "recoup_outcomes (reported_at, payment_id, customer_id, attempt_id, attempt_number, attempted_at, outcome, \
                 decline_code, network_code, advice_code, channel, payment_method_updated)",
                &types,
                rows,
                |w, r| {
                    w.write(&[
                        &r.reported_at,
                        &text(&r.payment_id),
                        &text(&r.customer_id),
                        &text(&r.attempt_id),
                        &(r.attempt_number.min(i32::MAX as u32) as i32),
                        &r.attempted_at,
                        &text(&r.outcome),
                        &text(&r.decline_code),
                        &text(&r.network_code),
                        &text(&r.advice_code),
                        &text(&r.channel),
                        &r.payment_method_updated,
                    ])
                },
            )
        })
    }
}

/// One binary `COPY` of `rows` into `target` ("table (columns)"), whose columns have `types`.
fn copy<R>(
    tx: &mut postgres::Transaction<'_>,
    target: &str,
    types: &[Type],
    rows: &[R],
    write: impl Fn(&mut BinaryCopyInWriter<'_>, &R) -> Result<(), postgres::Error>,
) -> Result<(), postgres::Error> {
    let mut w = BinaryCopyInWriter::new(tx.copy_in(&format!("COPY {target} FROM STDIN (FORMAT binary)"))?, types);
    for r in rows {
        write(&mut w, r)?;
    }
    w.finish().map(drop)
}

/// Every decision and outcome in the database, in the order they were written.
pub fn read(url: &str) -> Result<(Vec<DecisionRecord>, Vec<OutcomeRecord>), LogError> {
    let mut client = connect(url)?;
    let decisions = client
        .query(
            "SELECT decided_at, source, payment_id, customer_id, model_version, arm, action, next_step, retry_at, channel, \
             p_success, p_recovery, propensity, request FROM recoup_decisions ORDER BY id",
            &[],
        )
        .ctx(|| "reading recoup_decisions".into())?
        .iter()
        .map(|r| DecisionRecord {
            decided_at: r.get(0),
            source: r.get(1),
            payment_id: r.get(2),
            customer_id: r.get(3),
            model_version: r.get(4),
            arm: r.get(5),
            action: r.get(6),
            next_step: r.get(7),
            retry_at: r.get(8),
            channel: r.get(9),
            p_success: r.get(10),
            p_recovery: r.get(11),
            propensity: r.get(12),
            request: r.get(13),
        })
        .collect();
    let outcomes = client
        .query(
            "SELECT reported_at, payment_id, customer_id, attempt_id, attempt_number, attempted_at, outcome, decline_code, \
             network_code, advice_code, channel, payment_method_updated FROM recoup_outcomes ORDER BY id",
            &[],
        )
        .ctx(|| "reading recoup_outcomes".into())?
        .iter()
        .map(|r| OutcomeRecord {
            reported_at: r.get(0),
            payment_id: r.get(1),
            customer_id: r.get(2),
            attempt_id: r.get(3),
            attempt_number: r.get::<_, i32>(4).max(0) as u32,
            attempted_at: r.get(5),
            outcome: r.get(6),
            decline_code: r.get(7),
            network_code: r.get(8),
            advice_code: r.get(9),
            channel: r.get(10),
            payment_method_updated: r.get(11),
        })
        .collect();
    Ok((decisions, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_directories_and_passwords_never_printed() {
        assert!(is_url("postgres://recoup@db/recoup") && is_url("postgresql://db/recoup"));
        assert!(!is_url("decision-log/") && !is_url("/var/lib/recoup/postgres://x"));
        assert_eq!(redacted("postgres://recoup:s3cret@db:5432/recoup"), "postgres://recoup:***@db:5432/recoup");
        assert_eq!(redacted("postgres://recoup@db/recoup"), "postgres://recoup@db/recoup");
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
    }
}
