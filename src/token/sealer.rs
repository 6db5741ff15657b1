//! Sealing reset ids without a key derivation for each one.
//!
//! XChaCha20-Poly1305 derives a subkey from the key and the first 16 bytes of the nonce
//! (HChaCha20: a ChaCha block's worth of work, about a fifth of a seal), then runs
//! ChaCha20-Poly1305 under that subkey with the nonce's last 8 bytes. A nonce drawn whole at
//! random needs the derivation every time. Here each thread draws a random 16-byte prefix,
//! derives its subkey once, and seals the next `SEALS_PER_PREFIX` reset ids under it with the
//! last 8 bytes counting up from a random start. Under one subkey no nonce repeats (at most
//! `SEALS_PER_PREFIX` values of a 64-bit count), and subkeys come from 128-bit random prefixes.
//! What goes on the wire is an ordinary XChaCha20-Poly1305 nonce, so opening is unchanged and
//! replicas that draw whole random nonces open these ids and the other way round.
//!
//! The AEAD is put together here from its two primitives, as RFC 8439 defines it, rather than
//! through the chacha20poly1305 crate's `encrypt_in_place_detached`: that one asks ChaCha20 for
//! Poly1305's key block on its own and then for the message, and ChaCha20's AVX2 code computes
//! four blocks whatever it is asked for, so a 160-byte reset id cost four four-block rounds for
//! the three and a half blocks it needs. Here one request yields the key block and the next three
//! (`KEYSTREAM_AHEAD`), which covers a start's claims (one ChaCha20 call in place of four). The
//! output is the same bytes; a test holds it to the crate's for every length up to 600 bytes.
//!
//! What it shows: reset ids one thread sealed within one prefix's run share that prefix, and
//! their counts say how many ids it sealed between them (fewer than `SEALS_PER_PREFIX`).
//! Nothing in that tells whose reset an id is or whether the identifier has an account: decoys
//! are sealed the same way.

use std::cell::RefCell;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::{hchacha, ChaCha20};
use chacha20poly1305::aead::generic_array::typenum::U10;
use chacha20poly1305::{Nonce, Tag};
use poly1305::universal_hash::{KeyInit, UniversalHash};
use poly1305::Poly1305;
use rand::RngCore;
use thread_local::ThreadLocal;
use zeroize::{Zeroize, Zeroizing};

/// Reset ids a thread seals under one prefix before it draws the next.
pub const SEALS_PER_PREFIX: u32 = 256;

/// The length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;

/// Seals under one key, each thread with its own run of nonces.
pub struct Sealer {
    key: Zeroizing<[u8; 32]>,
    runs: ThreadLocal<RefCell<Run>>,
}

/// ChaCha20's block.
const BLOCK: usize = 64;
/// Keystream computed in one call: Poly1305's key block and three more, the four blocks
/// ChaCha20's AVX2 code computes at once. Claims of up to three blocks (a start's are about
/// 160 bytes) need no second call.
const KEYSTREAM_AHEAD: usize = 4 * BLOCK;

/// One thread's current prefix, its subkey, and where its count is.
struct Run {
    prefix: [u8; 16],
    subkey: Zeroizing<[u8; 32]>,
    next: u64,
    left: u32,
}

impl Run {
    fn fresh(key: &[u8; 32]) -> Run {
        let mut rng = rand::thread_rng();
        let mut prefix = [0u8; 16];
        rng.fill_bytes(&mut prefix);
        // HChaCha20 (ten double rounds), as XChaCha20 derives its subkey.
        let mut derived = hchacha::<U10>(key.into(), (&prefix).into());
        let subkey = Zeroizing::new(derived.into());
        derived.as_mut_slice().zeroize();
        Run {
            prefix,
            subkey,
            next: rng.next_u64(),
            left: SEALS_PER_PREFIX,
        }
    }
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Sealer {
        Sealer {
            key: Zeroizing::new(key),
            runs: ThreadLocal::new(),
        }
    }

    /// Encrypts `plaintext` in place with `header` as associated data, as XChaCha20-Poly1305
    /// under this key with the nonce written into `nonce`; returns the tag.
    pub fn seal(&self, header: &[u8], nonce: &mut [u8; NONCE_LEN], plaintext: &mut [u8]) -> Tag {
        let run = self.runs.get_or(|| RefCell::new(Run::fresh(&self.key)));
        let mut run = run.borrow_mut();
        if run.left == 0 {
            *run = Run::fresh(&self.key);
        }
        run.left -= 1;
        let count = run.next.to_le_bytes();
        run.next = run.next.wrapping_add(1);
        nonce[..16].copy_from_slice(&run.prefix);
        nonce[16..].copy_from_slice(&count);
        // XChaCha20's inner nonce: four zero bytes, then the last eight of the long one.
        let mut inner = Nonce::default();
        inner[4..].copy_from_slice(&count);
        seal_detached(&run.subkey, &inner, header, plaintext)
    }
}

/// ChaCha20-Poly1305 (RFC 8439, section 2.8) in place: block 0 of the keystream keys Poly1305,
/// the message is encrypted from block 1, and the tag covers the associated data and the
/// ciphertext, each padded to 16 bytes, then their lengths.
fn seal_detached(key: &[u8; 32], nonce: &Nonce, header: &[u8], plaintext: &mut [u8]) -> Tag {
    let mut chacha = ChaCha20::new(key.into(), nonce);
    let mut stream = Zeroizing::new([0u8; KEYSTREAM_AHEAD]);
    chacha.apply_keystream(&mut stream[..]);
    let (key_block, ahead) = stream.split_at(BLOCK);
    let covered = plaintext.len().min(ahead.len());
    let (near, far) = plaintext.split_at_mut(covered);
    for (byte, key_byte) in near.iter_mut().zip(ahead) {
        *byte ^= key_byte;
    }
    // Past the blocks computed ahead, `chacha` stands at block 4, where `far` begins. (Called
    // only for a longer message: even an empty call sets up the AVX2 state.)
    if !far.is_empty() {
        chacha.apply_keystream(far);
    }
    let mut mac = Poly1305::new(key_block[..32].into());
    mac.update_padded(header);
    mac.update_padded(plaintext);
    let mut lengths = poly1305::Block::default();
    lengths[..8].copy_from_slice(&(header.len() as u64).to_le_bytes());
    lengths[8..].copy_from_slice(&(plaintext.len() as u64).to_le_bytes());
    mac.update(&[lengths]);
    mac.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    fn sealed(sealer: &Sealer, text: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>, Tag) {
        let mut nonce = [0u8; NONCE_LEN];
        let mut buf = text.to_vec();
        let tag = sealer.seal(b"header", &mut nonce, &mut buf);
        (nonce, buf, tag)
    }

    #[test]
    fn what_it_seals_opens_as_xchacha20_poly1305() {
        let key = [7u8; 32];
        let sealer = Sealer::new(key);
        let standard = XChaCha20Poly1305::new((&key).into());
        for n in 0..3 {
            let text = format!("claims number {n}");
            let (nonce, mut buf, tag) = sealed(&sealer, text.as_bytes());
            assert_ne!(buf, text.as_bytes());
            standard
                .decrypt_in_place_detached(XNonce::from_slice(&nonce), b"header", &mut buf, &tag)
                .expect("a standard XChaCha20-Poly1305 opens it");
            assert_eq!(buf, text.as_bytes());
            // Wrong associated data is refused.
            let (nonce, mut buf, tag) = sealed(&sealer, text.as_bytes());
            assert!(standard
                .decrypt_in_place_detached(XNonce::from_slice(&nonce), b"other", &mut buf, &tag)
                .is_err());
        }
    }

    #[test]
    fn it_seals_what_the_aead_crate_seals_at_every_length() {
        use chacha20poly1305::ChaCha20Poly1305;
        let key = [3u8; 32];
        let nonce = Nonce::from([5u8; 12]);
        let reference = ChaCha20Poly1305::new((&key).into());
        for header in [&b""[..], b"\x01\x02k1", &[9u8; 40][..]] {
            for len in 0..=600 {
                let text: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                let mut ours = text.clone();
                let tag = seal_detached(&key, &nonce, header, &mut ours);
                let mut theirs = text.clone();
                let their_tag = reference
                    .encrypt_in_place_detached(&nonce, header, &mut theirs)
                    .unwrap();
                assert_eq!(ours, theirs, "ciphertext, {len} bytes");
                assert_eq!(tag, their_tag, "tag, {len} bytes");
            }
        }
    }

    #[test]
    fn nonces_never_repeat_and_prefixes_are_short_lived() {
        let sealer = Sealer::new([9u8; 32]);
        let mut nonces = std::collections::HashSet::new();
        let mut prefixes = Vec::new();
        for _ in 0..(3 * SEALS_PER_PREFIX) {
            let (nonce, _, _) = sealed(&sealer, b"x");
            assert!(nonces.insert(nonce), "a nonce repeated");
            if prefixes.last() != Some(&nonce[..16].to_vec()) {
                prefixes.push(nonce[..16].to_vec());
            }
        }
        assert_eq!(
            prefixes.len(),
            3,
            "a new prefix every {SEALS_PER_PREFIX} seals"
        );
        // Another thread has a run of its own.
        let other = std::thread::scope(|s| s.spawn(|| sealed(&sealer, b"x").0).join().unwrap());
        assert!(!prefixes.contains(&other[..16].to_vec()));
    }
}
