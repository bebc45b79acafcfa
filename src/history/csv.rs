//! CSV records checked before polars parses the file (edge). polars fails a
//! whole file on a record it cannot split (an unbalanced quote, bytes that are
//! not UTF-8, a wrong field count) with no row number, and quotes the rest of
//! the file in its error. So every record is checked here first: a bad one is
//! reported with its row, column and a short value, and replaced by an empty
//! record of the right width, so the rows polars numbers stay the file's rows
//! and `--skip-bad-rows` can reject it like any other bad row.
//!
//! Assumption (stated in the contract's spirit: ids, codes and timestamps):
//! a field never holds a line break, so every line is one record.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

/// One record that cannot be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// 0-based data row (the header not counted).
    pub row: usize,
    /// The header name of the field at fault, when one is.
    pub column: Option<String>,
    /// The offending text, shortened.
    pub value: String,
    pub reason: String,
}

/// A scanned file.
#[derive(Debug)]
pub struct Scanned {
    /// The file with each bad record replaced by an empty one.
    pub bytes: Vec<u8>,
    pub bad: Vec<BadRecord>,
}

/// Longest value quoted in an error.
const SHOWN: usize = 60;

fn shorten(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() <= SHOWN {
        s.into_owned()
    } else {
        format!("{}…", s.chars().take(SHOWN).collect::<String>())
    }
}

/// Field spans of one line, RFC 4180 quoting; the error is (field index, reason).
fn fields(line: &[u8]) -> Result<Vec<(usize, usize)>, (usize, &'static str)> {
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        let field = spans.len();
        if line.get(start) == Some(&b'"') {
            // Quoted: ends at a quote not doubled, which must end the line or precede a comma.
            let mut i = start + 1;
            loop {
                match line.get(i) {
                    None => return Err((field, "unbalanced quote: the field opens a quote that does not close on its line")),
                    Some(b'"') if line.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            let end = i + 1;
            spans.push((start, end));
            match line.get(end) {
                None => return Ok(spans),
                Some(b',') => start = end + 1,
                Some(_) => return Err((field, "text after a closing quote (a quote inside a field must be doubled)")),
            }
        } else {
            match line[start..].iter().position(|&c| c == b',') {
                Some(p) => {
                    spans.push((start, start + p));
                    start += p + 1;
                }
                None => {
                    spans.push((start, line.len()));
                    return Ok(spans);
                }
            }
        }
    }
}

/// The field index that byte `offset` of `line` falls in (quote-unaware: for errors only).
fn field_at(line: &[u8], offset: usize) -> usize {
    line[..offset.min(line.len())].iter().filter(|&&c| c == b',').count()
}

/// Check every record of a CSV file's bytes; `Err` names what is wrong with the header.
pub fn scan(mut bytes: &[u8]) -> Result<Scanned, String> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        bytes = rest;
    }
    let mut lines = bytes.split(|&c| c == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let header = lines.next().unwrap_or_default();
    let header_text = std::str::from_utf8(header).map_err(|e| format!("line 1 (the header) is not UTF-8 at byte {}", e.valid_up_to()))?;
    let names: Vec<String> = match fields(header) {
        Ok(spans) => spans.iter().map(|&(a, b)| header_text[a..b].trim_matches('"').trim().to_string()).collect(),
        Err((_, why)) => return Err(format!("line 1 (the header): {why}")),
    };
    // A name twice is ambiguous (which `currency` is the payment's?): refused, not
    // one of them ignored as `currency_duplicated_0`.
    for (j, name) in names.iter().enumerate() {
        if let Some(i) = names[..j].iter().position(|n| n == name) {
            return Err(format!("line 1 (the header): column `{name}` appears twice (fields {} and {})", i + 1, j + 1));
        }
    }
    let width = names.len();
    let empty: Vec<u8> = std::iter::repeat_n(b',', width.saturating_sub(1)).chain(std::iter::once(b'\n')).collect();
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.extend_from_slice(header);
    out.push(b'\n');
    let mut bad = Vec::new();
    let rest: Vec<&[u8]> = lines.collect();
    // Trailing empty lines end the file; an empty line before more data is a bad record.
    let last = rest.iter().rposition(|l| !l.is_empty()).map_or(0, |p| p + 1);
    let name = |k: usize| names.get(k).cloned();
    for (row, line) in rest[..last].iter().enumerate() {
        let problem = if line.is_empty() {
            Some((None, String::new(), "empty line".to_string()))
        } else if let Err(e) = std::str::from_utf8(line) {
            let at = e.valid_up_to();
            Some((name(field_at(line, at)), shorten(line), format!("not valid UTF-8 (byte 0x{:02X} at position {})", line[at], at + 1)))
        } else {
            match fields(line) {
                Err((k, why)) => Some((name(k), shorten(line), why.to_string())),
                Ok(spans) if spans.len() != width => Some((None, shorten(line), format!("{} fields, the header has {width}", spans.len()))),
                Ok(_) => None,
            }
        };
        match problem {
            None => {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            Some((column, value, reason)) => {
                bad.push(BadRecord { row, column, value, reason });
                out.extend_from_slice(&empty);
            }
        }
    }
    Ok(Scanned { bytes: out, bad })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_records_pass_unchanged() {
        let s = scan(b"a,b,c\n1,\"x, y\",3\r\n4,\"say \"\"hi\"\"\",6\n\n").unwrap();
        assert!(s.bad.is_empty(), "{:?}", s.bad);
        assert_eq!(s.bytes, b"a,b,c\n1,\"x, y\",3\n4,\"say \"\"hi\"\"\",6\n");
    }

    #[test]
    fn an_unbalanced_quote_is_one_bad_record_not_the_rest_of_the_file() {
        let s = scan(b"a,b,c\n1,2,3\n4,\"oops,6\n7,8,9\n").unwrap();
        assert_eq!(s.bad.len(), 1, "{:?}", s.bad);
        assert_eq!((s.bad[0].row, s.bad[0].column.as_deref()), (1, Some("b")));
        assert!(s.bad[0].reason.contains("unbalanced quote"));
        // The row count and the other rows are kept.
        assert_eq!(s.bytes, b"a,b,c\n1,2,3\n,,\n7,8,9\n");
    }

    #[test]
    fn non_utf8_names_the_field_and_wrong_widths_the_count() {
        let s = scan(b"a,b,c\n1,2,\xff\xfe\n1,2\n\n5,6,7\n").unwrap();
        assert_eq!(s.bad.len(), 3, "{:?}", s.bad);
        assert_eq!((s.bad[0].row, s.bad[0].column.as_deref()), (0, Some("c")));
        assert!(s.bad[0].reason.contains("UTF-8") && s.bad[0].reason.contains("0xFF"));
        assert!(s.bad[1].reason.contains("2 fields, the header has 3"));
        assert_eq!((s.bad[2].row, s.bad[2].reason.as_str()), (2, "empty line"));
    }

    #[test]
    fn long_values_are_shortened() {
        let mut text = b"a,b\n\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100_000));
        text.extend_from_slice(b",1\n");
        let s = scan(&text).unwrap();
        assert!(s.bad[0].value.chars().count() <= SHOWN + 1, "{}", s.bad[0].value.len());
    }

    #[test]
    fn a_bad_header_is_an_error_naming_line_1() {
        assert!(scan(b"a,\xff\n1,2\n").unwrap_err().contains("line 1"));
        assert!(scan(b"a,\"b\n1,2\n").unwrap_err().contains("line 1"));
        let twice = scan(b"a,currency,b,currency\n1,2,3,4\n").unwrap_err();
        assert!(twice.contains("line 1") && twice.contains("`currency` appears twice (fields 2 and 4)"), "{twice}");
    }
}
