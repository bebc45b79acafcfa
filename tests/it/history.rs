//! The history loader against contract v1: every kind of violation is rejected
//! with a message naming row and column; CSV and Parquet load to the same table.

use recoup::declines::DeclineCode;
use recoup::domain::{Channel, Outcome, PaymentMethod};
use recoup::history::{load, to_frame, write, History, LoadError, LoadOptions};

use crate::support::{recovered_payment, row, set, temp_file, varied_rows, write_csv, write_parquet_with_amount};

fn strict() -> LoadOptions {
    LoadOptions::default()
}

fn load_rows(rows: &[Vec<(&'static str, String)>]) -> Result<History, LoadError> {
    let (_dir, path) = temp_file("h.csv");
    write_csv(&path, rows);
    load(&path, &strict())
}

/// Load rows whose second payment's first row was changed by `f`; expect an
/// error naming `column` at data row 3 (line 4).
fn expect_rejected(column: &str, value: &str, reason_part: &str) {
    let mut rows = recovered_payment("p1");
    rows.extend(recovered_payment("p2"));
    rows[2] = set(rows[2].clone(), column, value);
    let err = load_rows(&rows).expect_err("must be rejected").to_string();
    assert!(err.contains("row 3 (line 4)"), "names the row: {err}");
    assert!(err.contains(&format!("column `{column}`")), "names the column: {err}");
    assert!(err.contains(reason_part), "says why ({reason_part}): {err}");
    if !value.is_empty() {
        assert!(err.contains(&format!("{value:?}")), "quotes the value: {err}");
    }
}

#[test]
fn valid_history_loads_typed_and_grouped() {
    let mut rows = recovered_payment("p1");
    rows.push(row("x0", "p2", 0, "2026-03-02T10:00:00Z", "failed"));
    let h = load_rows(&rows).expect("valid");
    assert_eq!(h.attempts.len(), 3);
    let payments: Vec<&[recoup::attempt::Attempt]> = h.payments().collect();
    assert_eq!(payments.len(), 2);
    let p1 = payments[0];
    assert_eq!(h.payment_id(&p1[0]), "p1");
    assert_eq!(p1[0].decline, Some(DeclineCode::InsufficientFunds));
    assert_eq!(p1[1].outcome, Outcome::Succeeded);
    assert_eq!(p1[1].decline, None);
    assert_eq!(p1[0].method, PaymentMethod::Card);
    assert_eq!(p1[0].channel, Some(Channel::Email));
    assert_eq!(p1[0].timezone, chrono_tz::Europe::Copenhagen);
    assert_eq!(p1[0].propensity, Some(0.5));
    assert_eq!(h.report.rows_rejected, 0);
}

#[test]
fn missing_required_values_are_rejected() {
    for column in [
        "attempt_id",
        "payment_id",
        "customer_id",
        "attempted_at",
        "attempt_number",
        "amount_minor",
        "currency",
        "payment_method",
        "country",
        "outcome",
    ] {
        expect_rejected(column, "", "required value is missing");
    }
}

#[test]
fn unparseable_timestamp_is_rejected() {
    expect_rejected("attempted_at", "2026-03-01 9am", "RFC 3339");
    // No offset: ambiguous, and the message says what is missing (not a
    // parser's "premature end of input").
    expect_rejected("attempted_at", "2026-03-01T09:00:00", "has no UTC offset");
    expect_rejected("attempted_at", "2026-03-01 09:00:00", "has no UTC offset");
    // A Unix time (a database column exported as is): named, with the time it would be.
    expect_rejected("attempted_at", "1772355600", "looks like a Unix time in seconds");
    expect_rejected("attempted_at", "1772355600", "would be 2026-03-01T09:00:00Z");
    expect_rejected("attempted_at", "1772355600000", "Unix time in milliseconds; the contract's timestamps are RFC 3339");
    // Digits of another length are no Unix time: the parser's message.
    expect_rejected("attempted_at", "20260301", "not an RFC 3339 timestamp");
}

#[test]
fn unknown_outcome_is_rejected() {
    expect_rejected("outcome", "refunded", "unknown value");
}

#[test]
fn negative_amount_is_rejected() {
    expect_rejected("amount_minor", "-1", "must not be negative");
    expect_rejected("amount_minor", "12.50", "not an integer");
}

#[test]
fn propensity_outside_unit_interval_is_rejected() {
    expect_rejected("propensity", "0", "(0, 1]");
    expect_rejected("propensity", "1.5", "(0, 1]");
    expect_rejected("propensity", "-0.2", "(0, 1]");
    expect_rejected("propensity", "NaN", "(0, 1]");
    let rows = vec![set(row("a", "p", 0, "2026-03-01T09:00:00Z", "failed"), "propensity", "1")];
    assert_eq!(load_rows(&rows).expect("1 is allowed").attempts[0].propensity, Some(1.0));
}

#[test]
fn vocabulary_and_code_columns_are_checked() {
    expect_rejected("payment_method", "paypal", "unknown value");
    expect_rejected("card_brand", "diners", "unknown value");
    expect_rejected("card_funding", "charge", "unknown value");
    expect_rejected("channel", "letter", "unknown value");
    expect_rejected("billing_interval", "quarter", "unknown value");
    expect_rejected("payment_method_updated", "maybe", "not a boolean");
    expect_rejected("country", "Denmark", "got \"Denmark\"");
    expect_rejected("currency", "EURO", "ISO 4217");
    expect_rejected("currency", "zzz", "ISO 4217");
    expect_rejected("timezone", "Europe/Atlantis", "IANA");
    expect_rejected("attempt_number", "-1", "0 or a positive integer");
    expect_rejected("tenure_days", "-5", "must not be negative");
    expect_rejected("tenure_days", "1000000000000", "more days than a u32 holds");
    expect_rejected("network_code", "5-1", "letters or digits");
}

#[test]
fn failed_row_needs_a_decline_reason_and_succeeded_row_must_not_have_one() {
    let mut rows = recovered_payment("p1");
    rows.extend(recovered_payment("p2"));
    rows[2] = set(set(rows[2].clone(), "decline_code", ""), "network_code", "");
    let err = load_rows(&rows).expect_err("no reason").to_string();
    assert!(err.contains("row 3") && err.contains("`decline_code`") && err.contains("required when outcome is failed"), "{err}");

    let mut rows = recovered_payment("p1");
    rows[1] = set(rows[1].clone(), "decline_code", "do_not_honor");
    let err = load_rows(&rows).expect_err("reason on success").to_string();
    assert!(err.contains("row 2") && err.contains("must be empty when outcome is succeeded"), "{err}");
}

#[test]
fn decline_code_is_derived_from_network_and_advice_codes() {
    let rows = vec![
        set(row("a", "p1", 0, "2026-03-01T09:00:00Z", "failed"), "decline_code", ""), // 51
        set(
            set(set(row("b", "p2", 0, "2026-03-01T09:00:00Z", "failed"), "decline_code", ""), "network_code", "R02"),
            "payment_method",
            "ach_debit",
        ),
        set(set(set(row("c", "p3", 0, "2026-03-01T09:00:00Z", "failed"), "decline_code", ""), "network_code", ""), "advice_code", "03"),
        set(row("d", "p4", 0, "2026-03-01T09:00:00Z", "failed"), "decline_code", "card_melted"),
        set(set(row("e", "p5", 0, "2026-03-01T09:00:00Z", "failed"), "decline_code", ""), "network_code", "Q7"),
    ];
    let h = load_rows(&rows).expect("valid");
    let code = |id: &str| h.attempts.iter().find(|a| h.attempt_id(a) == id).and_then(|a| a.decline);
    assert_eq!(code("a"), Some(DeclineCode::InsufficientFunds));
    assert_eq!(code("b"), Some(DeclineCode::AccountClosed));
    assert_eq!(code("c"), Some(DeclineCode::DoNotTryAgain));
    // An unknown decline_code next to a known network code (51): the network code
    // decides, and the unknown text is still counted.
    assert_eq!(code("d"), Some(DeclineCode::InsufficientFunds));
    assert_eq!(code("e"), Some(DeclineCode::Other));
    assert_eq!(h.report.derived_decline_codes, 4);
    assert_eq!(h.report.unknown_codes.get("decline_code=card_melted"), Some(&1));
    assert_eq!(h.report.unknown_codes.get("network_code=Q7"), Some(&1));
}

#[test]
fn duplicate_attempt_id_is_rejected_naming_both_rows() {
    let mut rows = recovered_payment("p1");
    rows.push(row("p1_a0", "p2", 0, "2026-03-02T10:00:00Z", "failed"));
    let err = load_rows(&rows).expect_err("duplicate").to_string();
    assert!(err.contains("row 3") && err.contains("`attempt_id`") && err.contains("duplicate attempt_id"), "{err}");
    assert!(err.contains("row 1"), "names the first occurrence: {err}");
}

#[test]
fn attempt_order_rules_within_a_payment() {
    // attempted_at goes backwards while attempt_number increases
    let rows = vec![row("a0", "p", 0, "2026-03-05T09:00:00Z", "failed"), row("a1", "p", 1, "2026-03-04T09:00:00Z", "failed")];
    let err = load_rows(&rows).expect_err("time order").to_string();
    assert!(err.contains("`attempted_at`") && err.contains("must increase"), "{err}");

    // attempt_number repeats
    let rows = vec![row("a0", "p", 1, "2026-03-01T09:00:00Z", "failed"), row("a1", "p", 1, "2026-03-02T09:00:00Z", "failed")];
    let err = load_rows(&rows).expect_err("repeat").to_string();
    assert!(err.contains("`attempt_number`") && err.contains("repeats"), "{err}");

    // a success followed by another attempt
    let rows = vec![
        row("a0", "p", 0, "2026-03-01T09:00:00Z", "failed"),
        row("a1", "p", 1, "2026-03-02T09:00:00Z", "succeeded"),
        row("a2", "p", 2, "2026-03-03T09:00:00Z", "failed"),
    ];
    let err = load_rows(&rows).expect_err("success not last").to_string();
    assert!(err.contains("row 2") && err.contains("`outcome`") && err.contains("must be the payment's last"), "{err}");

    // two successes
    let rows = vec![row("a0", "p", 0, "2026-03-01T09:00:00Z", "succeeded"), row("a1", "p", 1, "2026-03-02T09:00:00Z", "succeeded")];
    assert!(load_rows(&rows).is_err());

    // rows out of file order are fine as long as each payment is consistent
    let rows = vec![row("a1", "p", 1, "2026-03-02T09:00:00Z", "failed"), row("a0", "p", 0, "2026-03-01T09:00:00Z", "failed")];
    assert_eq!(load_rows(&rows).expect("valid").attempts[0].attempt_number, 0);
}

#[test]
fn missing_required_column_and_unknown_columns() {
    let rows: Vec<_> = recovered_payment("p1").into_iter().map(|r| r.into_iter().filter(|(c, _)| *c != "currency").collect()).collect();
    let err = load_rows(&rows).expect_err("no currency column").to_string();
    assert!(err.contains("required column `currency` is missing"), "{err}");

    // A file with none of the contract's columns (here: another separator, so
    // the header is one column) is refused, not read as 0 accepted rows.
    let (_dir, path) = temp_file("semicolons.csv");
    write_csv(&path, &recovered_payment("p1"));
    let text = std::fs::read_to_string(&path).unwrap().replace(',', ";");
    std::fs::write(&path, text).unwrap();
    let err = load(&path, &strict()).expect_err("one column").to_string();
    assert!(err.contains("comma-separated") && err.contains("';'"), "{err}");
    let (_dir, path) = temp_file("other.csv");
    std::fs::write(&path, "id,amount\n1,2\n").unwrap();
    let err = load(&path, &strict()).expect_err("no contract columns").to_string();
    assert!(err.contains("required column `attempt_id` is missing"), "{err}");

    let rows: Vec<_> = recovered_payment("p1")
        .into_iter()
        .map(|mut r| {
            r.push(("merchant_note", "hello".into()));
            r.retain(|(c, _)| *c != "propensity" && *c != "timezone");
            r
        })
        .collect();
    let h = load_rows(&rows).expect("optional columns may be absent");
    assert_eq!(h.report.unknown_columns, ["merchant_note"]);
    assert_eq!(h.report.defaulted_timezones, 2);
    assert_eq!(h.attempts[0].timezone, chrono_tz::Europe::Copenhagen, "DK default");
    assert_eq!(h.attempts[0].propensity, None);
}

#[test]
fn skip_bad_rows_writes_rejects_and_keeps_the_rest() {
    let (dir, path) = temp_file("h.csv");
    let mut rows = recovered_payment("good");
    rows.push(set(row("bad_amount", "p2", 0, "2026-03-01T09:00:00Z", "failed"), "amount_minor", "-5"));
    rows.push(row("good_a0", "p3", 0, "2026-03-01T09:00:00Z", "failed")); // duplicate id
    rows.push(row("s0", "seq", 0, "2026-03-05T09:00:00Z", "failed"));
    rows.push(row("s1", "seq", 1, "2026-03-04T09:00:00Z", "failed")); // time goes back: whole payment out
    write_csv(&path, &rows);
    let rejects = dir.path().join("rejects.csv");
    let h = load(&path, &LoadOptions { skip_bad_rows: true, reject_path: Some(rejects.clone()), ..LoadOptions::default() }).expect("skips");
    assert_eq!(h.attempts.len(), 2, "only the good payment remains");
    assert_eq!(h.report.rows_read, 6);
    assert_eq!(h.report.rows_rejected, 4);
    assert_eq!(h.report.rows_read, h.report.rows_accepted + h.report.rows_rejected, "nothing lost silently");
    assert_eq!(h.report.reject_file.as_deref(), Some(rejects.as_path()));
    let text = std::fs::read_to_string(&rejects).expect("reject file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "header + 4 rejects:\n{text}");
    assert!(lines[0].starts_with("_file,_row,_column,_value,_error,attempt_id,"), "{}", lines[0]);
    assert!(text.contains("bad_amount") && text.contains("must not be negative"));
    assert!(text.contains("duplicate attempt_id"));
    assert!(text.contains("s0") && text.contains("s1") && text.contains("payment rejected whole"));
    // the reject file keeps the original values so it can be fixed and reloaded
    assert!(text.contains(",-5,"), "{text}");
}

#[test]
fn csv_and_parquet_round_trip_to_identical_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("h.csv");
    write_csv(&csv, &varied_rows(300));
    let from_csv = load(&csv, &strict()).expect("csv loads");
    assert!(from_csv.attempts.len() > 600);

    let parquet = dir.path().join("h.parquet");
    write(&from_csv, &parquet).expect("write parquet");
    let from_parquet = load(&parquet, &strict()).expect("parquet loads");
    let csv2 = dir.path().join("h2.csv");
    write(&from_parquet, &csv2).expect("write csv");
    let from_csv2 = load(&csv2, &strict()).expect("csv loads again");

    for other in [&from_parquet, &from_csv2] {
        assert_eq!(to_frame(&from_csv).unwrap(), to_frame(other).unwrap());
        let strip = |h: &History| {
            h.attempts.iter().map(|a| recoup::attempt::Attempt { source: Default::default(), ..a.clone() }).collect::<Vec<_>>()
        };
        assert_eq!(strip(&from_csv), strip(other));
    }
}

/// `varied_rows(payments)` written to `dir/all.csv`, and the history it loads to.
fn varied_history(dir: &std::path::Path, payments: usize) -> (Vec<Vec<(&'static str, String)>>, History) {
    let csv = dir.join("all.csv");
    let rows = varied_rows(payments);
    write_csv(&csv, &rows);
    let all = load(&csv, &strict()).expect("loads");
    (rows, all)
}

#[test]
fn hive_partitioned_parquet_directory_loads_every_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rows, all) = varied_history(dir.path(), 120);
    // split by payment into two partitions
    let root = dir.path().join("history");
    for (k, part) in ["month=2026-01", "month=2026-02"].iter().enumerate() {
        let sub: Vec<_> = rows
            .iter()
            .filter(|r| {
                let p: usize = r[1].1.trim_start_matches("pay_").parse().unwrap();
                p % 2 == k
            })
            .cloned()
            .collect();
        let tmp = dir.path().join(format!("part{k}.csv"));
        write_csv(&tmp, &sub);
        let h = load(&tmp, &strict()).expect("part loads");
        std::fs::create_dir_all(root.join(part)).unwrap();
        write(&h, &root.join(part).join("part-0.parquet")).expect("write part");
    }
    std::fs::write(root.join("_SUCCESS"), "").unwrap();
    let h = load(&root, &strict()).expect("directory loads");
    assert_eq!(h.files.len(), 2);
    assert_eq!(h.attempts.len(), all.attempts.len());
    let mut a: Vec<String> = h.attempts.iter().map(|x| h.attempt_id(x).to_string()).collect();
    let mut b: Vec<String> = all.attempts.iter().map(|x| all.attempt_id(x).to_string()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

/// pandas (`to_parquet(partition_cols=[…])`) and Spark write a partition
/// column into the path, not the file: a contract column given that way is
/// read from the path, percent-decoded (`America%2FChicago`), Hive's default
/// partition is a missing value, and the history is the one the columns
/// would have given.
#[test]
fn contract_columns_given_as_hive_partitions_are_read_from_the_path() {
    use polars::prelude::ParquetWriter;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rows, all) = varied_history(dir.path(), 120);
    let root = dir.path().join("history");
    let cell = |r: &Vec<(&'static str, String)>, c: &str| r.iter().find(|(k, _)| *k == c).unwrap().1.clone();
    let mut parts: Vec<(String, String)> = rows.iter().map(|r| (cell(r, "country"), cell(r, "timezone"))).collect();
    parts.sort();
    parts.dedup();
    assert!(parts.len() >= 3 && parts.iter().any(|(_, tz)| tz.is_empty()), "{parts:?}");
    for (country, tz) in &parts {
        let sub: Vec<_> = rows.iter().filter(|r| cell(r, "country") == *country && cell(r, "timezone") == *tz).cloned().collect();
        let tmp = dir.path().join(format!("{country}.csv"));
        write_csv(&tmp, &sub);
        let mut part = to_frame(&load(&tmp, &strict()).expect("part loads")).expect("frame").drop_many(["country", "timezone"]);
        let tz = if tz.is_empty() { "__HIVE_DEFAULT_PARTITION__".to_string() } else { tz.replace('/', "%2F") };
        let at = root.join(format!("country={country}")).join(format!("timezone={tz}"));
        std::fs::create_dir_all(&at).unwrap();
        ParquetWriter::new(std::fs::File::create(at.join("part-0.parquet")).unwrap()).finish(&mut part).unwrap();
    }
    let h = load(&root, &strict()).expect("the partitions give the columns");
    assert_eq!(h.files.len(), parts.len());
    let key = |h: &History| {
        let mut v: Vec<_> =
            h.attempts.iter().map(|a| (h.attempt_id(a).to_string(), a.country.as_str().to_string(), a.timezone.name())).collect();
        v.sort();
        v
    };
    assert_eq!(key(&h), key(&all));
    assert!(all.report.defaulted_timezones > 0);
    assert_eq!(h.report.defaulted_timezones, all.report.defaulted_timezones, "the default partition is a missing zone");
}

#[test]
fn parquet_bad_values_name_row_and_column_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("h.csv");
    write_csv(&csv, &varied_rows(10));
    let h = load(&csv, &strict()).expect("loads");
    let pq = dir.path().join("bad.parquet");
    write_parquet_with_amount(&h, &pq, 3, -10); // data row 4
    let err = load(&pq, &strict()).expect_err("negative").to_string();
    assert!(err.contains("bad.parquet row 4, column `amount_minor`") && err.contains("-10"), "{err}");
}

#[test]
fn empty_directory_and_wrong_types_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = load(dir.path(), &strict()).expect_err("empty").to_string();
    assert!(err.contains("no .parquet or .csv files"), "{err}");
    let err = load(&dir.path().join("nope.csv"), &strict()).expect_err("missing").to_string();
    assert!(err.contains("nope.csv"), "{err}");
}

#[test]
fn parquet_read_in_small_slices_gives_the_same_history_and_row_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("h.csv");
    write_csv(&csv, &varied_rows(200));
    let whole = load(&csv, &strict()).expect("loads");
    let pq = dir.path().join("h.parquet");
    write(&whole, &pq).expect("write");
    let sliced = LoadOptions { parquet_slice_rows: Some(7), ..LoadOptions::default() };
    let h = load(&pq, &sliced).expect("loads in slices");
    assert_eq!(to_frame(&whole).unwrap(), to_frame(&h).unwrap());
    assert_eq!(h.report.rows_read, whole.report.rows_read);
    assert_eq!(h.report.files.len(), 1, "one file, however many slices");

    // a bad value in a later slice names its row in the file
    let n = whole.attempts.len();
    let bad = dir.path().join("bad.parquet");
    write_parquet_with_amount(&whole, &bad, n - 3, -1);
    let err = load(&bad, &sliced).expect_err("negative").to_string();
    assert!(err.contains(&format!("row {}, column `amount_minor`", n - 2)), "{err}");
}

/// Shards split a history by payer: every row in exactly one shard, every
/// payer's rows together.
#[test]
fn shards_partition_the_payers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/history.parquet");
    let full = load(&path, &LoadOptions::default()).unwrap();
    let mut rows = 0;
    let mut customers = std::collections::HashSet::new();
    for k in 0..3 {
        let h = load(&path, &LoadOptions { shard: Some((k, 3)), ..LoadOptions::default() }).unwrap();
        assert_eq!(h.report.rows_read, full.report.rows_read, "every pass reads every row");
        assert_eq!(h.report.rows_read, h.report.rows_accepted + h.report.rows_rejected + h.report.rows_other_shards, "{:?}", h.report);
        assert!(h.attempts.len() > full.attempts.len() / 5, "shard {k}: {} rows", h.attempts.len());
        rows += h.attempts.len();
        for a in &h.attempts {
            let c = h.customer_id(a);
            assert_eq!(recoup::history::shard_of(c, 3), k);
            customers.insert(c.to_string());
        }
    }
    assert_eq!(rows, full.attempts.len());
    assert_eq!(customers.len(), full.customer_ids.len());
}

/// The shard hash is the documented one, recomputable outside recoup: the first 8 bytes
/// of SHA-256("recoup-sample/v1:" + id), big-endian, times N over 2⁶⁴; shard 0 of N is
/// the sample of share 1/N.
#[test]
fn the_shard_of_a_payer_is_the_documented_hash() {
    use sha2::Digest;
    for id in ["cus_1", "cus_000042", "payer-ü", ""] {
        let d = sha2::Sha256::digest(format!("recoup-sample/v1:{id}").as_bytes());
        let place = u64::from_be_bytes(d[..8].try_into().unwrap());
        assert_eq!(recoup::history::payer_place(id), place);
        for n in [1u64, 2, 3, 8, 1000] {
            assert_eq!(recoup::history::shard_of(id, n), ((place as u128 * n as u128) >> 64) as u64, "{id} of {n}");
            assert_eq!(recoup::history::shard_of(id, n) == 0, recoup::learning_curve::payer_fraction(id) < 1.0 / n as f64, "{id} of {n}");
        }
    }
    // A value computed outside recoup (Python's hashlib), so a change of hash cannot pass unnoticed.
    assert_eq!(recoup::history::payer_place("cus_1"), 0x9111_f7b3_de66_590a);
    assert_eq!(recoup::history::shard_of("cus_1", 8), 4);
}

/// The CSV text of `rows` with data row `k` (0-based) replaced by `line`.
fn csv_with_line(rows: &[Vec<(&'static str, String)>], k: usize, line: &[u8]) -> Vec<u8> {
    let (_dir, path) = temp_file("h.csv");
    write_csv(&path, rows);
    let text = std::fs::read(&path).unwrap();
    let mut lines: Vec<&[u8]> = text.split(|&c| c == b'\n').collect();
    lines[k + 1] = line;
    lines.join(&b'\n')
}

#[test]
fn csv_records_polars_cannot_split_name_their_row_and_can_be_skipped() {
    let mut rows = recovered_payment("p1");
    rows.extend(recovered_payment("p2"));
    rows.extend(recovered_payment("p3"));
    // An unbalanced quote, with a long tail (the hostile run's 726 KB error).
    let mut broken = b"p2_a0,p2,\"cus_p2,2026-03-01T09:00:00Z".to_vec();
    broken.extend(std::iter::repeat_n(b'x', 200_000));
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (broken, "customer_id", "unbalanced quote"),
        (
            b"p2_a0,p2,cus_p2,2026-03-01T09:00:00Z,0,1999,EUR,card,visa,debit,DK,Europe/Copenhag\xe9n,failed".to_vec(),
            "timezone",
            "not valid UTF-8",
        ),
        (b"p2_a0,p2,cus_p2".to_vec(), "(record)", "3 fields, the header has 21"),
    ];
    for (line, column, reason) in cases {
        let (_dir, path) = temp_file("h.csv");
        std::fs::write(&path, csv_with_line(&rows, 2, &line)).unwrap();
        let err = load(&path, &strict()).expect_err("refused").to_string();
        assert!(err.len() < 600, "{} bytes of error", err.len());
        assert!(err.contains("row 3 (line 4)") && err.contains(&format!("column `{column}`")) && err.contains(reason), "{err}");
        // Skippable: the record goes to the rejects, the other rows load.
        let rejects = path.with_file_name("rejects.csv");
        let opts = LoadOptions { skip_bad_rows: true, reject_path: Some(rejects.clone()), ..LoadOptions::default() };
        let h = load(&path, &opts).expect("loads without the bad record");
        assert_eq!((h.report.rows_rejected, h.attempts.len()), (1, 5), "{column}");
        let text = std::fs::read_to_string(&rejects).unwrap();
        assert!(text.contains(reason), "{text}");
    }
}

#[test]
fn times_outside_1970_to_2200_and_unknown_currencies_are_rejected() {
    expect_rejected("attempted_at", "1600-03-01T09:00:00Z", "outside the accepted range");
    expect_rejected("attempted_at", "9999-03-01T09:00:00Z", "outside the accepted range");
    expect_rejected("currency", "ZZZ", "ISO 4217");
}

#[test]
fn parquet_pages_with_checksums_are_verified_and_a_flipped_page_is_refused() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checksummed.parquet");
    let h = load(&fixture, &strict()).expect("an intact checksummed file loads");
    assert!(h.report.pages_verified > 20 && h.report.pages_without_checksum == 0, "{:?}", h.report);
    let mut bytes = std::fs::read(&fixture).unwrap();
    bytes[3000] ^= 0x10;
    let (_dir, path) = temp_file("flipped.parquet");
    std::fs::write(&path, &bytes).unwrap();
    let err = load(&path, &strict()).expect_err("a flipped page is refused").to_string();
    assert!(err.contains("corrupt Parquet page") && err.contains("CRC-32") && err.contains("column `"), "{err}");
}

/// recoup's optional column `update_triggered` (a retry made because the payer updated):
/// read where given (true/false/1/0), false where empty or absent, and a value that is not a
/// boolean is refused naming the row and the column.
#[test]
fn update_triggered_is_read_and_checked() {
    let mut rows = recovered_payment("p1");
    rows.extend(recovered_payment("p2"));
    let values = ["", "true", "0", "1"];
    for (r, v) in rows.iter_mut().zip(values) {
        r.push(("update_triggered", v.to_string()));
    }
    let h = load_rows(&rows).expect("loads");
    let read: Vec<bool> = h.attempts.iter().map(|a| a.update_triggered).collect();
    assert_eq!(read, [false, true, false, true]);
    assert!(load_rows(&recovered_payment("p3")).expect("loads").attempts.iter().all(|a| !a.update_triggered));
    rows[2].last_mut().expect("the column").1 = "sometimes".into();
    let err = load_rows(&rows).expect_err("must be rejected").to_string();
    for part in ["row 3 (line 4)", "column `update_triggered`", "not a boolean", "\"sometimes\""] {
        assert!(err.contains(part), "{part}: {err}");
    }
}

/// A history written by pandas or a warehouse types its columns its own way:
/// categorical text, integers as floats (pandas, when a value is missing) or
/// narrow integers, codes as numbers that lost their leading zero (`5` for
/// `05`). Each loads to the same history as the text it stands for; a float
/// that is not a whole number is refused naming its row and column.
#[test]
fn parquet_columns_typed_by_pandas_or_a_warehouse_load_as_their_text_would() {
    use polars::prelude::{Categories, Column, DataType, NamedFrom, ParquetWriter, Series};
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("h.csv");
    // Card payments only: their network codes are numbers (51, 05, 91).
    let rows: Vec<_> = varied_rows(300).into_iter().filter(|r| r.iter().any(|(k, v)| *k == "payment_method" && v == "card")).collect();
    write_csv(&csv, &rows);
    let as_text = load(&csv, &strict()).expect("csv loads");
    assert!(as_text.attempts.iter().any(|a| a.network_code.is_some_and(|c| c.as_str() == "05")), "a code with a leading zero");
    assert!(as_text.attempts.iter().any(|a| a.tenure_days.is_none()), "a missing tenure");

    let mut df = to_frame(&as_text).expect("frame");
    let cast = |df: &polars::prelude::DataFrame, name: &str, to: &DataType| df.column(name).unwrap().cast(to).unwrap();
    let categorical = DataType::from_categories(Categories::global());
    for (name, to) in [
        ("amount_minor", DataType::Float64),
        ("tenure_days", DataType::Float64),
        ("attempt_number", DataType::Int16),
        ("payment_method_updated", DataType::Int8),
        ("network_code", DataType::Float64),
        ("currency", categorical.clone()),
        ("outcome", categorical.clone()),
        ("decline_code", categorical),
    ] {
        let c = cast(&df, name, &to);
        df.with_column(c).unwrap();
    }
    assert_eq!(df.column("network_code").unwrap().dtype(), &DataType::Float64, "the codes are numbers now");
    let typed = dir.path().join("typed.parquet");
    ParquetWriter::new(std::fs::File::create(&typed).unwrap()).finish(&mut df).unwrap();
    let from_typed = load(&typed, &strict()).expect("typed parquet loads");
    let strip =
        |h: &History| h.attempts.iter().map(|a| recoup::attempt::Attempt { source: Default::default(), ..a.clone() }).collect::<Vec<_>>();
    assert_eq!(strip(&as_text), strip(&from_typed));
    assert!(from_typed.report.naive_timestamp_files.is_empty(), "a UTC timestamp column is not naive");

    // A timestamp column without a time zone (pandas' naive datetime64): read as UTC, and said.
    let mut naive_df = df.clone();
    let naive = cast(&naive_df, "attempted_at", &DataType::Datetime(polars::prelude::TimeUnit::Microseconds, None));
    naive_df.with_column(naive).unwrap();
    let naive_path = dir.path().join("naive.parquet");
    ParquetWriter::new(std::fs::File::create(&naive_path).unwrap()).finish(&mut naive_df).unwrap();
    let from_naive = load(&naive_path, &strict()).expect("naive timestamps load");
    assert_eq!(strip(&as_text), strip(&from_naive), "read as the UTC times they were");
    assert_eq!(from_naive.report.naive_timestamp_files, [naive_path]);

    // Tenure 12.5 days is not a whole number: refused, naming row 4.
    let tenure: Vec<Option<f64>> = (0..df.height()).map(|i| if i == 3 { Some(12.5) } else { Some(365.0) }).collect();
    df.with_column(Column::from(Series::new("tenure_days".into(), tenure))).unwrap();
    let bad = dir.path().join("bad.parquet");
    ParquetWriter::new(std::fs::File::create(&bad).unwrap()).finish(&mut df).unwrap();
    let err = load(&bad, &strict()).expect_err("12.5 days").to_string();
    for part in ["bad.parquet row 4", "column `tenure_days`", "not a whole number", "12.5"] {
        assert!(err.contains(part), "{part}: {err}");
    }
}

/// A code column typed as integers by the exporter loses its leading zeros;
/// a lone digit is read as the two-digit code (Mastercard advice `3` is `03`:
/// never retry), in CSV as in Parquet.
#[test]
fn a_one_digit_code_is_the_two_digit_code_that_lost_its_zero() {
    let mut rows = recovered_payment("p1");
    rows.extend(recovered_payment("p2"));
    rows[0] = set(set(rows[0].clone(), "decline_code", ""), "network_code", "5");
    rows[2] = set(set(set(rows[2].clone(), "decline_code", ""), "card_brand", "mastercard"), "advice_code", "3");
    let h = load_rows(&rows).expect("loads");
    assert_eq!(h.attempts[0].network_code.map(|c| c.to_string()).as_deref(), Some("05"));
    assert_eq!(h.attempts[0].decline, Some(DeclineCode::DoNotHonor));
    assert_eq!(h.attempts[2].decline, Some(DeclineCode::DoNotTryAgain), "advice 3 is 03 and overrides the 51 beside it");
    assert_eq!(h.report.unknown_codes.len(), 0, "{:?}", h.report.unknown_codes);
}

/// Attempt numbers that start at 1 (the original charge numbered 1) are the
/// contract misread, not a broken row: the load says so, and says it apart
/// from a few payments whose original charge is before the export's start.
#[test]
fn payments_without_their_original_charge_are_counted_and_one_based_numbers_named() {
    let mut rows = recovered_payment("p1");
    rows.extend(recovered_payment("p2"));
    rows.extend(recovered_payment("p3"));
    let h = load_rows(&rows).expect("loads");
    assert_eq!((h.report.payments_without_original, h.report.without_original_warning(3)), (0, None));

    let shifted: Vec<_> = rows
        .iter()
        .map(|r| {
            let n: u32 = r.iter().find(|(k, _)| *k == "attempt_number").unwrap().1.parse().unwrap();
            set(r.clone(), "attempt_number", &(n + 1).to_string())
        })
        .collect();
    let h = load_rows(&shifted).expect("loads: the rows keep the contract");
    assert_eq!(h.report.payments_without_original, 3);
    let warning = h.report.without_original_warning(3).expect("warned");
    assert!(warning.contains("no payment has its original charge") && warning.contains("start at 1"), "{warning}");

    let cut: Vec<_> = rows.iter().enumerate().filter(|(i, _)| *i != 0).map(|(_, r)| r.clone()).collect();
    let h = load_rows(&cut).expect("loads");
    assert_eq!(h.report.payments_without_original, 1);
    assert!(h.report.without_original_warning(3).expect("warned").starts_with("1 of 3 payments have no original charge"));
}

/// Exports spell codes, the vocabulary and zone names in their own case (Stripe
/// writes `usd`; some ledgers `SUCCEEDED`, `Card`): read as the contract's. The gRPC API
/// keeps the contract's spelling (its clients are programs).
#[test]
fn codes_and_vocabulary_in_another_case_read_as_the_contract_s() {
    let rows: Vec<_> = recovered_payment("p1")
        .into_iter()
        .map(|r| {
            let outcome = r.iter().find(|(k, _)| *k == "outcome").unwrap().1.to_uppercase();
            let r = set(set(set(set(r, "currency", "usd"), "country", "dk"), "outcome", &outcome), "payment_method", "Card");
            set(set(r, "channel", "EMAIL"), "timezone", "europe/copenhagen")
        })
        .collect();
    let h = load_rows(&rows).expect("loads");
    let a = &h.attempts[0];
    assert_eq!(
        (a.amount.currency.as_str(), a.country.as_str(), a.method, a.channel),
        ("USD", "DK", PaymentMethod::Card, Some(Channel::Email))
    );
    assert_eq!(h.attempts[1].outcome, Outcome::Succeeded);
    assert_eq!(a.timezone, chrono_tz::Europe::Copenhagen);
}

/// A retry charged to another `payment_method_id` than the attempt before it was made
/// after the payer replaced the method: read as `payment_method_updated`, as the card rules
/// read it, whether the history has no flag column (a platform's export) or left the flag
/// false. The same method, or a method not identified, sets nothing.
#[test]
fn a_retry_on_another_payment_method_id_is_read_as_updated() {
    let with_ids = |rows: Vec<Vec<(&'static str, String)>>, ids: &[&str], flag_column: bool| -> Vec<Vec<(&'static str, String)>> {
        rows.into_iter()
            .zip(ids)
            .map(|(mut r, id)| {
                r.push(("payment_method_id", id.to_string()));
                if !flag_column {
                    r.retain(|(c, _)| *c != "payment_method_updated");
                }
                r
            })
            .collect()
    };
    let mut rows = recovered_payment("p1");
    rows.insert(1, set(row("p1_b", "p1", 1, "2026-03-02T09:00:00Z", "failed"), "decline_code", "expired_card"));
    rows[2] = set(rows[2].clone(), "attempt_number", "2");
    rows.extend(recovered_payment("p2"));
    // p1: two attempts on pm_old, then the recovery on pm_new; p2: one method throughout, but
    // its second row's method is not given.
    let ids = ["pm_old", "pm_old", "pm_new", "pm_x", ""];
    for flag_column in [false, true] {
        let h = load_rows(&with_ids(rows.clone(), &ids, flag_column)).expect("loads");
        let updated: Vec<bool> = h.attempts.iter().map(|a| a.method_updated()).collect();
        assert_eq!(updated, [false, false, true, false, false], "flag column {flag_column}");
        assert_eq!(h.report.updates_from_method_id, 1);
    }
    assert_eq!(recoup::history::summarize(&load_rows(&with_ids(rows.clone(), &ids, false)).unwrap()).updated_retries, 1);
    // Neither flags nor ids: `history check` says training cannot learn a replaced method.
    let (_dir, csv) = temp_file("bare.csv");
    write_csv(&csv, &with_ids(rows.clone(), &["", "", "", "", ""], false));
    let check = |path: &std::path::Path| {
        let out = assert_cmd::Command::cargo_bin("recoup").unwrap().args(["history", "check"]).arg(path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(check(&csv).contains("no retry follows an update"), "{}", check(&csv));
    write_csv(&csv, &with_ids(rows.clone(), &ids, false));
    let said = check(&csv);
    assert!(!said.contains("no retry follows an update"), "{said}");
    // One is too few to learn from alone: training pulls it toward the prior, and says so.
    assert!(said.contains("only 1 retries follow an update"), "{said}");
    assert!(said.contains("1 retries charged to another payment_method_id"), "{said}");
    // A flag already set is not counted again.
    let mut flagged = with_ids(rows.clone(), &ids, true);
    flagged[2] = set(flagged[2].clone(), "payment_method_updated", "true");
    let h = load_rows(&flagged).expect("loads");
    assert!(h.attempts[2].method_updated());
    assert_eq!(h.report.updates_from_method_id, 0);
}
