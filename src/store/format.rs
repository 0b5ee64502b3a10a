//! The on-disk text form of the priority record: encoding and strict decoding.
//!
//! ```text
//! hapair-record v1
//! pair=<pair UID>
//! member=a
//! priority=1
//! term=4
//! written=1700000000
//! crc32=1a2b3c4d
//! ```
//!
//! The CRC-32 covers every byte before the `crc32=` line, so any single changed byte is
//! detected. This module performs no I/O and never guesses: a file that is not exactly what
//! [`encode`] would write for the values it holds is rejected with a reason.

use crate::protocol::{Member, Priority, Standing, Term};

use super::Record;

/// First line of a version-1 record.
pub(crate) const HEADER: &str = "hapair-record v1";
const VERSION_PREFIX: &str = "hapair-record v";
const CRC_KEY: &str = "crc32=";
/// The longest pair UID stored (a Kubernetes UID is 36; 253 is the longest object name).
const MAX_PAIR_UID: usize = 253;
/// The body fields, in the only order accepted.
const FIELDS: [&str; 5] = ["pair", "member", "priority", "term", "written"];

/// The record as written: the header, one `key=value` line per field, then the checksum line.
pub(crate) fn encode(record: &Record) -> Vec<u8> {
    let mut text = format!(
        "{HEADER}\npair={}\nmember={}\npriority={}\nterm={}\nwritten={}\n",
        record.pair_uid,
        record.member,
        record.standing.priority,
        record.standing.term,
        record.written_unix,
    );
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("{CRC_KEY}{crc:08x}\n"));
    text.into_bytes()
}

/// True when `uid` can be stored on one line and read back unchanged.
pub(crate) fn valid_pair_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_PAIR_UID
        && uid.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// Decodes a record file's bytes; the error is the reason it cannot be trusted.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if !bytes.ends_with(b"\n") {
        return Err("the last line is incomplete (truncated, or bytes after the checksum)".into());
    }
    check_header(bytes)?;
    let body = check_crc(bytes)?;
    let text = std::str::from_utf8(body).map_err(|_| "the file is not UTF-8 text".to_string())?;
    let record = parse_body(text)?;
    if encode(&record) != bytes {
        return Err("the file is not in canonical form (e.g. leading zeros or upper case)".into());
    }
    Ok(record)
}

fn check_header(bytes: &[u8]) -> Result<(), String> {
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    if first == HEADER.as_bytes() {
        return Ok(());
    }
    if first.starts_with(VERSION_PREFIX.as_bytes()) {
        return Err(format!(
            "unknown format version {} (this hapair reads '{HEADER}')",
            quote(first)
        ));
    }
    Err(format!(
        "not a hapair record: the first line is {}",
        quote(first)
    ))
}

/// Checks the last line's checksum against every byte before it; returns those bytes.
fn check_crc(bytes: &[u8]) -> Result<&[u8], String> {
    let without_newline = &bytes[..bytes.len() - 1];
    let start = without_newline
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let (body, last) = bytes.split_at(start);
    let last = &last[..last.len() - 1];
    let stated = parse_crc_line(last)?;
    let actual = crc32fast::hash(body);
    if stated != actual {
        return Err(format!(
            "checksum mismatch: the file says {stated:08x}, its contents give {actual:08x}"
        ));
    }
    Ok(body)
}

fn parse_crc_line(line: &[u8]) -> Result<u32, String> {
    let missing = || {
        format!(
            "no checksum line at the end (truncated?): the last line is {}",
            quote(line)
        )
    };
    let hex = line.strip_prefix(CRC_KEY.as_bytes()).ok_or_else(missing)?;
    let lower_hex = hex.len() == 8 && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lower_hex {
        return Err(format!(
            "the checksum line {} is not 8 lower-case hex digits",
            quote(line)
        ));
    }
    // Invariant: `hex` is 8 ASCII hex digits (checked above), so it is UTF-8 and fits a u32.
    let hex = std::str::from_utf8(hex).map_err(|_| missing())?;
    u32::from_str_radix(hex, 16).map_err(|_| missing())
}

/// Parses the lines between the header and the checksum line (the checksum already matched).
fn parse_body(text: &str) -> Result<Record, String> {
    let mut lines = text.lines().skip(1);
    let mut values = Vec::with_capacity(FIELDS.len());
    for (i, key) in FIELDS.iter().enumerate() {
        let line_no = i + 2;
        let line = lines
            .next()
            .ok_or_else(|| format!("field '{key}' is missing (truncated?)"))?;
        let value = line
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .ok_or_else(|| format!("line {line_no}: expected '{key}=…', found {}", quote(line)))?;
        values.push(value);
    }
    if let Some(extra) = lines.next() {
        return Err(format!("unexpected line after 'written': {}", quote(extra)));
    }
    record_from(&values)
}

fn record_from(values: &[&str]) -> Result<Record, String> {
    let [pair, member, priority, term, written] = values else {
        return Err("wrong number of fields".into());
    };
    if !valid_pair_uid(pair) {
        return Err(format!("pair: {} is not a valid pair UID", quote(pair)));
    }
    let member: Member = member.parse().map_err(|e| format!("member: {e}"))?;
    let priority: Priority = priority.parse().map_err(|e| format!("priority: {e}"))?;
    let term = Term(number("term", term)?);
    Ok(Record {
        pair_uid: (*pair).to_string(),
        member,
        standing: Standing::new(priority, term),
        written_unix: number("written", written)?,
    })
}

fn number(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: {} is not a whole number", quote(value)))
}

/// A line as it may safely appear in a message: escaped, and cut at 60 characters.
fn quote(line: impl AsRef<[u8]>) -> String {
    let text = String::from_utf8_lossy(line.as_ref());
    let short: String = text.chars().take(60).collect();
    let cut = if short.len() < text.len() { "…" } else { "" };
    format!("{short:?}{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            pair_uid: "6f1c2d3e-0000-4a4a-8b8b-123456789abc".into(),
            member: Member::B,
            standing: Standing::new(Priority::One, Term(42)),
            written_unix: 1_700_000_000,
        }
    }

    fn with_crc(body: &str) -> Vec<u8> {
        format!("{body}{CRC_KEY}{:08x}\n", crc32fast::hash(body.as_bytes())).into_bytes()
    }

    #[test]
    fn encoded_record_is_readable_text_and_decodes_to_itself() {
        let bytes = encode(&sample());
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("hapair-record v1\npair=6f1c2d3e-0000-4a4a-8b8b-123456789abc\n"));
        assert!(text.contains("\nmember=b\npriority=1\nterm=42\nwritten=1700000000\ncrc32="));
        assert_eq!(decode(&bytes), Ok(sample()));
    }

    #[test]
    fn every_single_byte_change_anywhere_is_rejected() {
        let good = encode(&sample());
        for at in 0..good.len() {
            for flip in 1..=255u8 {
                let mut bad = good.clone();
                bad[at] ^= flip;
                assert!(decode(&bad).is_err(), "byte {at} ^ {flip:#04x} accepted");
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let good = encode(&sample());
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "truncated to {len} accepted");
        }
    }

    #[test]
    fn trailing_bytes_after_the_checksum_are_rejected() {
        let mut bad = encode(&sample());
        bad.extend_from_slice(b"x\n");
        let reason = decode(&bad).unwrap_err();
        assert!(reason.contains("no checksum line"), "{reason}");
    }

    #[test]
    fn unknown_version_is_named_in_the_reason() {
        let bad = with_crc("hapair-record v2\npair=p\nmember=a\npriority=1\nterm=0\nwritten=0\n");
        let reason = decode(&bad).unwrap_err();
        assert!(
            reason.contains("unknown format version \"hapair-record v2\""),
            "{reason}"
        );
    }

    #[test]
    fn upper_case_checksum_is_rejected_although_its_value_matches() {
        let good = String::from_utf8(encode(&sample())).unwrap();
        let (body, crc) = good.rsplit_once(CRC_KEY).unwrap();
        assert!(
            crc.contains(|c: char| c.is_ascii_lowercase()),
            "sample needs a hex letter"
        );
        let bad = format!("{body}{CRC_KEY}{}", crc.to_uppercase());
        assert!(decode(bad.as_bytes()).unwrap_err().contains("lower-case"));
    }

    #[test]
    fn well_checksummed_but_invalid_fields_are_rejected_with_the_field_named() {
        let cases = [
            (
                "pair=p\nmember=c\npriority=1\nterm=0\nwritten=0\n",
                "member:",
            ),
            (
                "pair=p\nmember=a\npriority=4\nterm=0\nwritten=0\n",
                "priority:",
            ),
            (
                "pair=p\nmember=a\npriority=1\nterm=-1\nwritten=0\n",
                "term:",
            ),
            (
                "pair=p\nmember=a\npriority=1\nterm=007\nwritten=0\n",
                "canonical",
            ),
            ("pair=\nmember=a\npriority=1\nterm=0\nwritten=0\n", "pair:"),
            (
                "pair=p\npriority=1\nmember=a\nterm=0\nwritten=0\n",
                "line 3",
            ),
            (
                "pair=p\nmember=a\npriority=1\nterm=0\n",
                "'written' is missing",
            ),
            (
                "pair=p\nmember=a\npriority=1\nterm=0\nwritten=0\nx=1\n",
                "unexpected line",
            ),
        ];
        for (fields, expected) in cases {
            let bytes = with_crc(&format!("{HEADER}\n{fields}"));
            let reason = decode(&bytes).unwrap_err();
            assert!(reason.contains(expected), "{fields:?}: {reason}");
        }
    }

    #[test]
    fn pair_uid_must_fit_on_one_line() {
        assert!(valid_pair_uid("6f1c2d3e-0000-4a4a-8b8b-123456789abc"));
        for bad in ["", "a b", "a\nb", "a\u{0}b", &"x".repeat(MAX_PAIR_UID + 1)] {
            assert!(!valid_pair_uid(bad), "{bad:?} accepted");
        }
    }
}
