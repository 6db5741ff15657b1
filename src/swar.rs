//! Byte scans eight bytes per step (SIMD within a register), for the short strings the request
//! path checks on every request: the JSON strings it writes and its replies' header values.

/// A one in every byte of a word.
pub const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// The high bit of every byte of a word.
pub const HIGHS: u64 = ONES * 0x80;

/// Whether some byte of `word` is zero. Exact for that question: a borrow can only come from a
/// byte that already is zero, so it marks nothing in a word without one.
pub fn has_zero_byte(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Whether some byte of `word` is `byte`.
pub fn has_byte(word: u64, byte: u8) -> bool {
    has_zero_byte(word ^ (ONES * u64::from(byte)))
}

/// Whether some byte of `bytes` is one that `word_has` finds in a word of eight (read
/// little-endian) or `byte_is` finds among the bytes left over; the two must ask the same.
pub fn any(bytes: &[u8], word_has: impl Fn(u64) -> bool, byte_is: impl Fn(u8) -> bool) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        if word_has(u64::from_le_bytes(
            word.try_into().expect("chunks of eight bytes"),
        )) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| byte_is(b))
}
