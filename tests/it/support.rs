//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use recoup::history::CONTRACT_COLUMNS;

/// A valid row of the contract, as column → text.
pub fn row(attempt_id: &str, payment_id: &str, attempt_number: u32, at: &str, outcome: &str) -> Vec<(&'static str, String)> {
    let failed = outcome == "failed";
    vec![
        ("attempt_id", attempt_id.into()),
        ("payment_id", payment_id.into()),
        ("customer_id", format!("cus_{payment_id}")),
        ("attempted_at", at.into()),
        ("attempt_number", attempt_number.to_string()),
        ("amount_minor", "1999".into()),
        ("currency", "EUR".into()),
        ("payment_method", "card".into()),
        ("card_brand", "visa".into()),
        ("card_funding", "debit".into()),
        ("country", "DK".into()),
        ("timezone", "Europe/Copenhagen".into()),
        ("outcome", outcome.into()),
        ("decline_code", if failed { "insufficient_funds".into() } else { String::new() }),
        ("network_code", if failed { "51".into() } else { String::new() }),
        ("advice_code", String::new()),
        ("channel", "email".into()),
        ("payment_method_updated", "false".into()),
        ("billing_interval", "month".into()),
        ("tenure_days", "120".into()),
        ("propensity", "0.5".into()),
    ]
}

/// Set one column of a row.
pub fn set(mut r: Vec<(&'static str, String)>, column: &str, value: &str) -> Vec<(&'static str, String)> {
    let cell = r.iter_mut().find(|(c, _)| *c == column).expect("known column");
    cell.1 = value.to_string();
    r
}

/// A failed original and a recovered retry: the smallest valid payment.
pub fn recovered_payment(p: &str) -> Vec<Vec<(&'static str, String)>> {
    vec![
        row(&format!("{p}_a0"), p, 0, "2026-03-01T09:00:00Z", "failed"),
        row(&format!("{p}_a1"), p, 1, "2026-03-04T07:30:00Z", "succeeded"),
    ]
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// Write rows as a contract CSV (header from the first row).
pub fn write_csv(path: &Path, rows: &[Vec<(&'static str, String)>]) {
    let header: Vec<&str> = match rows.first() {
        Some(r) => r.iter().map(|(c, _)| *c).collect(),
        None => CONTRACT_COLUMNS.iter().map(|(c, _)| *c).collect(),
    };
    let mut text = header.join(",");
    text.push('\n');
    for r in rows {
        let line: Vec<String> = r.iter().map(|(_, v)| csv_field(v)).collect();
        text.push_str(&line.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).expect("write csv");
}

/// A temp dir and a path inside it.
pub fn temp_file(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    (dir, path)
}

/// A varied valid history of `payments` payments (1–4 attempts each), covering every
/// payment method, optional columns empty and present, and several time zones.
pub fn varied_rows(payments: usize) -> Vec<Vec<(&'static str, String)>> {
    let methods = [
        ("card", "visa", "51", "insufficient_funds"),
        ("card", "mastercard", "05", "do_not_honor"),
        ("sepa_debit", "", "AM04", ""),
        ("ach_debit", "", "R01", ""),
        ("card", "amex", "91", ""),
    ];
    let countries = [("US", "America/Chicago"), ("GB", ""), ("DE", "Europe/Berlin"), ("SE", "Europe/Stockholm")];
    let channels = ["none", "email", "sms", "in_app", "push", ""];
    let mut rows = Vec::new();
    for p in 0..payments {
        let (method, brand, net, decline) = methods[p % methods.len()];
        let (country, tz) = countries[p % countries.len()];
        let n = 1 + p % 4;
        let recovered = p % 3 != 0;
        for k in 0..n {
            let last = k + 1 == n;
            let outcome = if last && recovered && k > 0 { "succeeded" } else { "failed" };
            let at = format!(
                "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                1 + p % 12,
                1 + k * 3,
                (p * 7 + k) % 24,
                p % 60,
                k * 11 % 60,
                p % 1000
            );
            let mut r = row(&format!("att_{p}_{k}"), &format!("pay_{p}"), k as u32, &at, outcome);
            r = set(r, "payment_method", method);
            r = set(r, "card_brand", brand);
            r = set(r, "card_funding", if brand.is_empty() { "" } else { ["credit", "debit", "prepaid", "unknown"][p % 4] });
            r = set(r, "country", country);
            r = set(r, "timezone", tz);
            r = set(r, "currency", ["USD", "GBP", "EUR", "SEK"][p % 4]);
            r = set(r, "amount_minor", &(100 + p * 37 % 5000).to_string());
            r = set(r, "channel", channels[(p + k) % channels.len()]);
            r = set(r, "payment_method_updated", ["true", "false", ""][(p + k) % 3]);
            r = set(r, "billing_interval", ["week", "month", "year", ""][p % 4]);
            r = set(r, "tenure_days", if p % 5 == 0 { "" } else { "365" });
            r = set(r, "propensity", if p % 6 == 0 { "" } else { ["1", "0.25", "0.125"][k % 3] });
            r = set(r, "advice_code", if brand == "mastercard" && outcome == "failed" { "24" } else { "" });
            if outcome == "failed" {
                r = set(r, "network_code", net);
                r = set(r, "decline_code", decline);
            } else {
                r = set(r, "network_code", "");
                r = set(r, "decline_code", "");
            }
            rows.push(r);
        }
    }
    rows
}

/// Write `h` to Parquet at `path` with row `row` (0-based) given amount `amount`:
/// a contract violation that only a Parquet file can carry as a typed value.
pub fn write_parquet_with_amount(h: &recoup::history::History, path: &Path, row: usize, amount: i64) {
    let mut df = recoup::history::to_frame(h).expect("frame");
    let amounts: Vec<i64> = df
        .column("amount_minor")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .enumerate()
        .map(|(i, v)| if i == row { amount } else { v })
        .collect();
    df.with_column(polars::prelude::Column::new("amount_minor".into(), amounts)).unwrap();
    polars::prelude::ParquetWriter::new(std::fs::File::create(path).unwrap()).finish(&mut df).unwrap();
}

/// Run `recoup simulate` with `args` into `out` and assert it succeeded.
pub fn simulate_to(args: &[&str], out: &Path) {
    assert_cmd::Command::cargo_bin("recoup").unwrap().arg("simulate").args(args).arg("-q").arg("--out").arg(out).assert().success();
}
