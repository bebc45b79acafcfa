//! Parquet page checksums (edge: reads files). polars decodes pages without
//! checking the CRC-32 a writer may store in each page header, so a file with
//! flipped bits can load with altered values. Before a Parquet file is read,
//! every page of every column chunk is walked: its header must parse, its
//! length must stay inside the chunk, and where the header carries a CRC the
//! page's bytes must match it. Writers differ: Spark, parquet-mr and pyarrow
//! (`write_page_checksum=True`) store checksums, polars does not; the load
//! report counts both kinds of page so a user knows what was verified. A CRC
//! covers a page's body, not its header: a flip in a header's statistics can
//! pass unseen (a flip that breaks the header's structure cannot).
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use polars_parquet_format::thrift::protocol::TCompactInputProtocol;
use polars_parquet_format::PageHeader;

/// Pages walked in one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCounts {
    /// Pages whose CRC-32 matched.
    pub verified: u64,
    /// Pages whose header carries no checksum (not verifiable).
    pub without_checksum: u64,
}

/// Where and why a file's pages do not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: corrupt Parquet page (row group {row_group}, column `{column}`, page {page}): {reason}", file.display())]
pub struct Corrupt {
    pub file: std::path::PathBuf,
    pub row_group: usize,
    pub column: String,
    pub page: usize,
    pub reason: String,
}

/// Largest page header accepted (headers are tens of bytes; statistics can add some).
const MAX_HEADER: usize = 1 << 20;

/// Walk every page of `path`; `Err` names the first page that fails.
pub fn verify(path: &Path) -> Result<PageCounts, Corrupt> {
    verify_spans(path, &mut |_| {})
}

/// [`verify`], telling `body` the file offsets of every page's body (what a CRC covers).
pub fn verify_spans(path: &Path, body: &mut dyn FnMut(std::ops::Range<u64>)) -> Result<PageCounts, Corrupt> {
    let corrupt = |row_group: usize, column: &str, page: usize, reason: String| Corrupt {
        file: path.to_path_buf(),
        row_group,
        column: column.to_string(),
        page,
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| corrupt(0, "", 0, e.to_string()))?;
    let meta = polars_parquet::parquet::read::read_metadata(&mut f).map_err(|e| corrupt(0, "(footer)", 0, e.to_string()))?;
    let mut counts = PageCounts::default();
    let mut chunk = Vec::new();
    for (rg, group) in meta.row_groups.iter().enumerate() {
        for col in group.parquet_columns() {
            let name = col.descriptor().path_in_schema.join(".");
            let range = col.byte_range();
            let len = usize::try_from(range.end.saturating_sub(range.start)).map_err(|e| corrupt(rg, &name, 0, e.to_string()))?;
            chunk.resize(len, 0);
            f.seek(SeekFrom::Start(range.start))
                .and_then(|_| f.read_exact(&mut chunk))
                .map_err(|e| corrupt(rg, &name, 0, format!("column chunk outside the file ({e})")))?;
            let mut cur = Cursor::new(&chunk[..]);
            let mut page = 0;
            while (cur.position() as usize) < chunk.len() {
                let header = {
                    let mut prot = TCompactInputProtocol::new(&mut cur, MAX_HEADER);
                    PageHeader::read_from_in_protocol(&mut prot)
                        .map_err(|e| corrupt(rg, &name, page, format!("unreadable page header ({e})")))?
                };
                let start = cur.position() as usize;
                let size = usize::try_from(header.compressed_page_size)
                    .map_err(|_| corrupt(rg, &name, page, format!("negative page size {}", header.compressed_page_size)))?;
                let Some(bytes) = chunk.get(start..start.saturating_add(size)) else {
                    return Err(corrupt(rg, &name, page, format!("page of {size} bytes runs past its column chunk")));
                };
                body(range.start + start as u64..range.start + (start + size) as u64);
                match header.crc {
                    Some(crc) if crc32fast::hash(bytes) as i32 != crc => {
                        return Err(corrupt(
                            rg,
                            &name,
                            page,
                            format!("CRC-32 {:08x} does not match the page's {:08x}", crc32fast::hash(bytes), crc as u32),
                        ));
                    }
                    Some(_) => counts.verified += 1,
                    None => counts.without_checksum += 1,
                }
                cur.set_position((start + size) as u64);
                page += 1;
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checksummed.parquet")
    }

    #[test]
    fn a_checksummed_file_verifies_every_page() {
        let c = verify(&fixture()).expect("intact");
        assert!(c.verified > 20 && c.without_checksum == 0, "{c:?}");
    }

    #[test]
    fn every_flipped_byte_inside_a_page_body_is_caught() {
        let bytes = std::fs::read(fixture()).unwrap();
        let mut bodies = Vec::new();
        verify_spans(&fixture(), &mut |r| bodies.push(r)).expect("intact");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flipped.parquet");
        let (mut caught, mut tried, mut headers_caught, mut headers) = (0, 0, 0, 0);
        for k in (4..bodies.last().map_or(0, |r| r.end as usize)).step_by(53) {
            let mut b = bytes.clone();
            b[k] ^= 0x10;
            std::fs::write(&path, &b).unwrap();
            let in_body = bodies.iter().any(|r| r.contains(&(k as u64)));
            let err = verify(&path).is_err() as usize;
            if in_body {
                (tried, caught) = (tried + 1, caught + err);
            } else {
                (headers, headers_caught) = (headers + 1, headers_caught + err);
            }
        }
        assert!(tried > 300, "{tried}");
        assert_eq!(caught, tried, "{caught} of {tried} flips inside page bodies caught");
        // Page headers carry no checksum of their own: a flip there is caught only
        // when it breaks the header's structure (statistics bytes can change unseen).
        assert!(headers_caught * 4 >= headers, "{headers_caught} of {headers} header flips caught");
    }
}
