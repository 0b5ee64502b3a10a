//! One entry of the key/value log, encoded exactly as it lies on disk and as the master sends it
//! to its standby: the standby checks and appends the master's bytes unchanged.
//!
//! Layout, little-endian: `body length u32 | crc32 of body u32 | body`, where the body is
//! `epoch u64 | index u64 | key length u32 | key (UTF-8) | value`. The checksum lets recovery
//! tell a torn last entry (a crash during an append that was never acknowledged) from data.

/// Length and checksum in front of every body.
pub const HEADER_LEN: usize = 8;
/// Epoch, index and key length.
const FIXED_BODY_LEN: usize = 20;
/// A longer body is not an entry this program wrote: the length field itself is damaged.
const MAX_BODY_LEN: usize = 64 << 20;

/// Where an entry sits in the history: the master epoch that wrote it and its 1-based index.
/// `(0, 0)` is the empty log's position, which every log has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub epoch: u64,
    pub index: u64,
}

/// One write: `key` was set to `value` by the master of `epoch`, at `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub epoch: u64,
    pub index: u64,
    pub key: String,
    pub value: Vec<u8>,
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, intact entry and the number of bytes it took.
    Entry(Entry, usize),
    /// The buffer ends inside the entry.
    Incomplete,
    /// The bytes are not an entry (bad length, checksum or key): why.
    Corrupt(String),
}

impl Entry {
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            index: self.index,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let body_len = FIXED_BODY_LEN + self.key.len() + self.value.len();
        let mut out = Vec::with_capacity(HEADER_LEN + body_len);
        out.extend_from_slice(&len_u32(body_len).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // checksum, filled in below
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&len_u32(self.key.len()).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.value);
        let crc = crc32fast::hash(&out[HEADER_LEN..]);
        out[4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The entry at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Decoded {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Decoded::Incomplete;
        };
        let body_len = u32_at(header, 0) as usize;
        if !(FIXED_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) {
            return Decoded::Corrupt(format!("impossible entry length {body_len}"));
        }
        let Some(body) = bytes.get(HEADER_LEN..HEADER_LEN + body_len) else {
            return Decoded::Incomplete;
        };
        if crc32fast::hash(body) != u32_at(header, 4) {
            return Decoded::Corrupt("checksum mismatch".into());
        }
        match decode_body(body) {
            Ok(entry) => Decoded::Entry(entry, HEADER_LEN + body_len),
            Err(why) => Decoded::Corrupt(why),
        }
    }
}

fn decode_body(body: &[u8]) -> Result<Entry, String> {
    let key_len = u32_at(body, 16) as usize;
    let key = body
        .get(FIXED_BODY_LEN..FIXED_BODY_LEN + key_len)
        .ok_or_else(|| format!("key length {key_len} exceeds the entry"))?;
    let key = std::str::from_utf8(key).map_err(|e| format!("key is not UTF-8: {e}"))?;
    Ok(Entry {
        epoch: u64_at(body, 0),
        index: u64_at(body, 8),
        key: key.to_string(),
        value: body[FIXED_BODY_LEN + key_len..].to_vec(),
    })
}

/// Keys and values are bounded by the HTTP body limit, far below 4 GiB.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

// The callers checked the slice lengths: the fixed fields are always present.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            epoch: 4,
            index: 17,
            key: "user/42".into(),
            value: b"\x00binary\xff".to_vec(),
        }
    }

    #[test]
    fn an_entry_round_trips_and_reports_its_length() {
        let bytes = entry().encode();
        assert_eq!(Entry::decode(&bytes), Decoded::Entry(entry(), bytes.len()));
    }

    #[test]
    fn a_prefix_of_an_entry_is_incomplete() {
        let bytes = entry().encode();
        for cut in [0, 3, HEADER_LEN, bytes.len() - 1] {
            assert_eq!(Entry::decode(&bytes[..cut]), Decoded::Incomplete, "{cut}");
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut bytes = entry().encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            Entry::decode(&bytes),
            Decoded::Corrupt("checksum mismatch".into())
        );
    }

    #[test]
    fn a_damaged_length_is_corrupt_not_incomplete() {
        let mut bytes = entry().encode();
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Entry::decode(&bytes), Decoded::Corrupt(_)));
    }
}
