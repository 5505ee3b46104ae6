//! Skipping plain bytes eight at a time. Every ingested body is scanned for the bytes JSON
//! escapes and SQS refuses (twice: the body for its envelope, the envelope for the queue), and
//! in a profile of `inlet dev` those byte-at-a-time loops were ≈ 3.7 % of its CPU; almost
//! every byte of a real body is plain, so whole words of plain bytes are passed over with a
//! few integer operations and only a word that may hold a special byte is looked at byte by
//! byte (docs/performance.md, "Fewer passes over a body").

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `w` is zero (exact: no false positive when none is).
#[inline]
fn any_zero(w: u64) -> bool {
    w.wrapping_sub(ONES) & !w & HIGHS != 0
}

/// Whether any byte of `w` is below 0x20 (exact, as 0x20 ≤ 0x80).
#[inline]
fn any_control(w: u64) -> bool {
    w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0
}

/// Where the byte-by-byte look must resume: the start of the first 8-byte word at or after
/// `from` that may hold a byte below 0x20 or one of `also`, or the start of the last part
/// word (fewer than eight bytes left). Every byte before it is none of those.
#[inline]
pub(crate) fn skip_plain<const N: usize>(bytes: &[u8], mut from: usize, also: [u8; N]) -> usize {
    while let Some(word) = bytes.get(from..from + 8) {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(word);
        let w = u64::from_ne_bytes(buf);
        if any_control(w) || also.iter().any(|&b| any_zero(w ^ (ONES * u64::from(b)))) {
            return from;
        }
        from += 8;
    }
    from
}

/// Every index of `bytes` that is below 0x20 or one of `also`, in order, found through
/// [`skip_plain`]: what a scan visits byte by byte. The scans build on this.
pub(crate) fn special_bytes<'a, const N: usize>(
    bytes: &'a [u8],
    also: [u8; N],
) -> impl Iterator<Item = usize> + 'a {
    let mut at = 0;
    let mut word_end = 0;
    std::iter::from_fn(move || loop {
        if at >= word_end {
            at = skip_plain(bytes, at, also);
            word_end = (at + 8).min(bytes.len());
        }
        let i = at;
        let b = *bytes.get(i)?;
        at += 1;
        if b < 0x20 || also.contains(&b) {
            return Some(i);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain loop the scan replaces.
    fn reference(bytes: &[u8], also: &[u8]) -> Vec<usize> {
        (0..bytes.len())
            .filter(|&i| bytes[i] < 0x20 || also.contains(&bytes[i]))
            .collect()
    }

    #[test]
    fn every_special_byte_is_found_at_every_offset_and_no_other() {
        let also = [b'"', b'\\', 0xEF];
        // Each byte value at each position of a 24-byte run, among plain bytes and beside
        // the bytes nearest the bounds (0x1F/0x20, 0x7F/0x80, 0xEE/0xF0, 0xFF).
        for value in 0..=255u8 {
            for pos in 0..24 {
                let mut bytes = [b'a'; 24];
                bytes[pos] = value;
                bytes[(pos + 5) % 24] = [0x20, 0x7F, 0x80, 0xEE, 0xF0, 0xFF][pos % 6];
                for start in 0..9 {
                    let slice = &bytes[start..];
                    assert_eq!(
                        special_bytes(slice, also).collect::<Vec<_>>(),
                        reference(slice, &also),
                        "value {value:#x} at {pos}, from {start}"
                    );
                }
            }
        }
        let mixed: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(
            special_bytes(&mixed, also).collect::<Vec<_>>(),
            reference(&mixed, &also)
        );
        assert_eq!(special_bytes(b"", also).count(), 0);
    }
}
