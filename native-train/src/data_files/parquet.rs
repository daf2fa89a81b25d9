//! Parquet data files → JSONL rows, with the checks the parquet crate leaves to its caller: a
//! crafted file must get an error, not a crash or gigabytes of memory. Every byte range is
//! checked against the file, and every page header is read (a small Thrift compact-protocol
//! walker, since the crate keeps its own private) so that the sizes pages declare stay within
//! the data limit before the crate allocates them.

use anyhow::{Result, anyhow, bail};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// The rows of a Parquet file as JSONL, one object per line. `limit` bounds both what its
/// pages inflate to and the JSON they make (the same limit as a gzip file's bytes).
pub(super) fn as_jsonl(bytes: Vec<u8>, limit: u64) -> Result<Vec<u8>> {
    let bytes = bytes::Bytes::from(bytes);
    let reader = SerializedFileReader::new(bytes.clone())?;
    check_column_chunks(reader.metadata(), &bytes, limit)?;
    // The parquet crate asserts where a crafted file breaks an assumption we have not checked
    // above: such a file gets an error, not a crash. (The reader is dropped right after, so no
    // state a panic left half-updated is ever seen: unwind-safe.)
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut jsonl = Vec::new();
        for row in reader.get_row_iter(None)? {
            serde_json::to_writer(&mut jsonl, &row?.to_json_value())?;
            jsonl.push(b'\n');
            if jsonl.len() as u64 > limit {
                bail!(too_large(limit, "its rows take"));
            }
        }
        Ok(jsonl)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(anyhow!("not a readable Parquet file ({what})"))
    })
}

fn too_large(limit: u64, what: &str) -> String {
    format!(
        "{what} more than {limit} bytes (the limit for one data file; split it or set \
         HARMAUG_MAX_DATA_BYTES)"
    )
}

/// Every column chunk's byte range lies inside the file (the parquet crate panics on a
/// negative one), and its pages, read header by header, inflate to at most `limit` bytes in
/// all (the crate allocates what a header declares: a 2 KB file declared a 1.9 GB page). Both
/// found by fuzzing, fuzz/regressions/data_file.
fn check_column_chunks(metadata: &ParquetMetaData, file: &[u8], limit: u64) -> Result<()> {
    let mut inflated = 0u64;
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, column) in group.columns().iter().enumerate() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let length = column.compressed_size();
            let chunk = usize::try_from(start)
                .ok()
                .zip(usize::try_from(length).ok())
                .and_then(|(start, length)| file.get(start..start.checked_add(length)?));
            let Some(chunk) = chunk else {
                let end = start.saturating_add(length);
                bail!(
                    "row group {g}, column {c}: bytes {start}..{end} lie outside the file \
                     ({} bytes)",
                    file.len()
                );
            };
            let pages =
                pages_inflate_to(chunk).map_err(|e| anyhow!("row group {g}, column {c}: {e}"))?;
            inflated = inflated.saturating_add(pages);
            if inflated > limit {
                bail!(too_large(limit, "its pages inflate to"));
            }
        }
    }
    Ok(())
}

/// What a column chunk's pages inflate to by their headers: headers plus declared page sizes,
/// as the footer counts a chunk's uncompressed size.
fn pages_inflate_to(chunk: &[u8]) -> Result<u64> {
    let mut total = 0u64;
    for page in pages(chunk) {
        let page = page?;
        total = total.saturating_add((page.header + page.uncompressed) as u64);
    }
    Ok(total)
}

/// The pages of a column chunk, header by header, each checked to end inside the chunk.
fn pages(chunk: &[u8]) -> impl Iterator<Item = Result<PageSizes>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= chunk.len() {
            return None;
        }
        let mut header = CompactReader {
            bytes: &chunk[at..],
            at: 0,
        };
        let page = header.page_sizes().and_then(|sizes| {
            let end = (at + sizes.header).checked_add(sizes.compressed);
            at = end
                .filter(|&end| end <= chunk.len())
                .ok_or_else(|| anyhow!("a page at byte {at} runs past its column chunk"))?;
            Ok(sizes)
        });
        if page.is_err() {
            at = chunk.len();
        }
        Some(page)
    })
}

/// A page's header length (bytes read by `page_sizes`) and the sizes it declares.
struct PageSizes {
    header: usize,
    uncompressed: usize,
    compressed: usize,
}

/// Just enough of Thrift's compact protocol to read a `PageHeader`'s sizes (fields 2 and 3)
/// and step over the rest of it.
struct CompactReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// Compact-protocol type codes (thrift's `TCompactProtocol`).
mod kind {
    pub const STOP: u8 = 0;
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
}

/// Nesting deeper than any Parquet header needs is refused, not recursed into.
const MAX_DEPTH: usize = 16;

impl CompactReader<'_> {
    fn page_sizes(&mut self) -> Result<PageSizes> {
        let (mut uncompressed, mut compressed) = (None, None);
        let mut field = 0i64;
        loop {
            let header = self.byte()?;
            let kind = header & 0x0f;
            if kind == kind::STOP {
                break;
            }
            field = match header >> 4 {
                0 => zigzag(self.varint()?),
                delta => field + i64::from(delta),
            };
            match (field, kind) {
                (2, kind::I32) => uncompressed = Some(self.size()?),
                (3, kind::I32) => compressed = Some(self.size()?),
                _ => self.skip(kind, 0)?,
            }
        }
        match (uncompressed, compressed) {
            (Some(uncompressed), Some(compressed)) => Ok(PageSizes {
                header: self.at,
                uncompressed,
                compressed,
            }),
            _ => bail!("a page header without its sizes"),
        }
    }

    fn size(&mut self) -> Result<usize> {
        let value = zigzag(self.varint()?);
        usize::try_from(value).map_err(|_| anyhow!("a page header declares size {value}"))
    }

    fn byte(&mut self) -> Result<u8> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| anyhow!("a page header cut short"))?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("a page header holds an over-long number")
    }

    fn advance(&mut self, count: u64) -> Result<()> {
        let end = usize::try_from(count)
            .ok()
            .and_then(|count| self.at.checked_add(count))
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| anyhow!("a page header cut short"))?;
        self.at = end;
        Ok(())
    }

    /// Steps over one value of type `kind` (booleans in a field header carry no bytes).
    fn skip(&mut self, kind: u8, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!("a page header nested deeper than {MAX_DEPTH}");
        }
        match kind {
            kind::TRUE | kind::FALSE => Ok(()),
            kind::BYTE => self.advance(1),
            kind::I16 | kind::I32 | kind::I64 => self.varint().map(drop),
            kind::DOUBLE => self.advance(8),
            kind::BINARY => {
                let length = self.varint()?;
                self.advance(length)
            }
            kind::LIST | kind::SET => {
                let header = self.byte()?;
                let count = match header >> 4 {
                    15 => self.varint()?,
                    count => u64::from(count),
                };
                self.skip_elements(count, header & 0x0f, depth)
            }
            kind::MAP => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                let kinds = self.byte()?;
                for _ in 0..count {
                    self.skip_element(kinds >> 4, depth)?;
                    self.skip_element(kinds & 0x0f, depth)?;
                }
                Ok(())
            }
            kind::STRUCT => loop {
                let header = self.byte()?;
                if header & 0x0f == kind::STOP {
                    return Ok(());
                }
                if header >> 4 == 0 {
                    self.varint()?;
                }
                self.skip(header & 0x0f, depth + 1)?;
            },
            other => bail!("a page header holds unknown Thrift type {other}"),
        }
    }

    fn skip_elements(&mut self, count: u64, kind: u8, depth: usize) -> Result<()> {
        for _ in 0..count {
            self.skip_element(kind, depth)?;
        }
        Ok(())
    }

    /// Inside a list, set or map a boolean takes a byte of its own.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Result<()> {
        match kind {
            kind::TRUE | kind::FALSE => self.advance(1),
            _ => self.skip(kind, depth + 1),
        }
    }
}

fn zigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/formats/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap()
    }

    /// On files pyarrow wrote, the walker finds every page: headers plus declared page sizes
    /// add up to each column chunk's total in the footer.
    #[test]
    fn page_walk_accounts_for_every_column_chunk_byte() {
        let bytes = bytes::Bytes::from(fixture("wildguardmix_test.parquet"));
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        for group in reader.metadata().row_groups() {
            for column in group.columns() {
                let start = column
                    .dictionary_page_offset()
                    .unwrap_or(column.data_page_offset()) as usize;
                let chunk = &bytes[start..start + column.compressed_size() as usize];
                assert!(pages(chunk).count() >= 1);
                let inflated = pages_inflate_to(chunk).unwrap();
                assert_eq!(inflated as i64, column.uncompressed_size());
            }
        }
    }

    /// Fields out of order, skipped nested structs, lists of booleans and binaries, and a
    /// field id given in full (delta 0) are all stepped over.
    #[test]
    fn header_fields_in_any_order_and_nesting() {
        let header = [
            0x35, 0x04, // field 3 (delta 3, i32): compressed = 2
            0x1c, // field 4 (delta 1, struct)
            0x19, 0x21, 0x01, // field 1: list of 2 booleans (true, ...)
            0x02, //   ... false
            0x18, 0x02, b'h', b'i', // field 2 (delta 1): binary "hi"
            0x00, // end of struct
            0x05, 0x04, // field id in full (delta 0, i32): zigzag 2 → field 2
            0xa0, 0x1f, // uncompressed = zigzag(4000) = 2000
            0x00, // end of header
        ];
        let mut reader = CompactReader {
            bytes: &header,
            at: 0,
        };
        let sizes = reader.page_sizes().unwrap();
        assert_eq!((sizes.uncompressed, sizes.compressed), (2000, 2));
        assert_eq!(reader.at, header.len());
    }

    #[test]
    fn malformed_headers_are_refused() {
        let cut_short = [0x15, 0x04];
        let too_deep = [0x1c; 40];
        let no_sizes = [0x15, 0x00, 0x00];
        let negative = [0x15, 0x00, 0x15, 0x03, 0x15, 0x02, 0x00];
        for (bytes, message) in [
            (&cut_short[..], "cut short"),
            (&too_deep[..], "nested deeper"),
            (&no_sizes[..], "without its sizes"),
            (&negative[..], "declares size -2"),
        ] {
            let mut reader = CompactReader { bytes, at: 0 };
            let error = reader.page_sizes().err().unwrap().to_string();
            assert!(error.contains(message), "{error}");
        }
    }
}
