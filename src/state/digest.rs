//! The digest of a managed key's value: what the `digests` hash records (docs/state.md).
//!
//! Owns the digest format: `sum256:` + 64 hex digits, the sum modulo 2^256 of one SHA-256
//! per element (a hash field with its value, a set member), each read as a big-endian
//! number. A sum does not depend on the order elements are read in, and changing one
//! field of a 20 MB hash costs one subtraction and one addition instead of hashing the
//! whole value again. Also recognises the digests earlier releases wrote (`sha256:` of
//! the value's canonical JSON), so a live state written before is checked as it was.
//! Must not know: Redis, keys' names, or what the values mean.

use sha2::{Digest, Sha256};

/// What starts every digest this release writes.
pub const PREFIX: &str = "sum256:";

/// What the digests of earlier releases start with (the SHA-256 of canonical JSON).
pub const LEGACY_PREFIX: &str = "sha256:";

/// The tag hashed with each element: a key's type as celeroot owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    String,
    Hash,
    Set,
    /// The fields celeroot owns of a hash it shares (a RedBeat entry's `definition`).
    Fields,
    /// The members of a sorted set whose scores belong to someone else.
    Members,
}

impl Tag {
    fn name(self) -> &'static str {
        match self {
            Tag::String => "string",
            Tag::Hash => "hash",
            Tag::Set => "set",
            Tag::Fields => "fields",
            Tag::Members => "members",
        }
    }
}

/// A running digest: the sum of its elements' hashes, as four 64-bit limbs, least
/// significant first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum([u64; 4]);

impl Sum {
    /// The hash of one element: SHA-256 of the tag, then each part as its length in
    /// bytes (decimal), `:` and its bytes. A string's element is its value, a hash's a
    /// field and its value, a set's a member.
    pub fn element(tag: Tag, parts: &[&str]) -> Sum {
        let mut h = Sha256::new();
        h.update(tag.name().as_bytes());
        for p in parts {
            h.update(p.len().to_string().as_bytes());
            h.update(b":");
            h.update(p.as_bytes());
        }
        let bytes: [u8; 32] = h.finalize().into();
        let mut limbs = [0u64; 4];
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut be = [0u8; 8];
            be.copy_from_slice(chunk);
            limbs[3 - i] = u64::from_be_bytes(be);
        }
        Sum(limbs)
    }

    /// Adds an element's hash (modulo 2^256).
    pub fn add(&mut self, other: Sum) {
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            let (s, c1) = a.overflowing_add(b);
            let (s, c2) = s.overflowing_add(u64::from(carry));
            *a = s;
            carry = c1 || c2;
        }
    }

    /// Takes an element's hash away again (modulo 2^256).
    pub fn sub(&mut self, other: Sum) {
        let mut borrow = false;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            let (s, b1) = a.overflowing_sub(b);
            let (s, b2) = s.overflowing_sub(u64::from(borrow));
            *a = s;
            borrow = b1 || b2;
        }
    }

    /// The digest as recorded: `sum256:` and 64 hex digits, most significant first.
    pub fn render(&self) -> String {
        format!(
            "{PREFIX}{:016x}{:016x}{:016x}{:016x}",
            self.0[3], self.0[2], self.0[1], self.0[0]
        )
    }

    /// A recorded digest of this format (`None`: an earlier format, or not a digest).
    pub fn parse(s: &str) -> Option<Sum> {
        let hex = s.strip_prefix(PREFIX)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let start = (3 - i) * 16;
            *limb = u64::from_str_radix(hex.get(start..start + 16)?, 16).ok()?;
        }
        Some(Sum(limbs))
    }
}

/// The sum of `elements`, each an element's parts.
pub fn sum<'a, I, P>(tag: Tag, elements: I) -> Sum
where
    I: IntoIterator<Item = P>,
    P: AsRef<[&'a str]>,
{
    let mut s = Sum::default();
    for e in elements {
        s.add(Sum::element(tag, e.as_ref()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_renders_parses_and_ignores_order() {
        let a = sum(Tag::Hash, [["a", "1"], ["b", "2"], ["c", "3"]]);
        let b = sum(Tag::Hash, [["c", "3"], ["a", "1"], ["b", "2"]]);
        assert_eq!(a, b);
        assert_eq!(Sum::parse(&a.render()), Some(a));
        assert_eq!(a.render().len(), PREFIX.len() + 64);
        assert_eq!(Sum::parse("sha256:00"), None);
        assert_eq!(Sum::parse(&format!("{PREFIX}{}", "g".repeat(64))), None);
        assert_eq!(Sum::parse(&format!("{PREFIX}{}", "0".repeat(63))), None);
    }

    #[test]
    fn removing_and_adding_an_element_patches_the_sum() {
        let before = sum(Tag::Hash, [["a", "1"], ["b", "2"]]);
        let mut patched = before;
        patched.sub(Sum::element(Tag::Hash, &["b", "2"]));
        patched.add(Sum::element(Tag::Hash, &["b", "3"]));
        assert_eq!(patched, sum(Tag::Hash, [["a", "1"], ["b", "3"]]));
        patched.sub(Sum::element(Tag::Hash, &["b", "3"]));
        patched.add(Sum::element(Tag::Hash, &["b", "2"]));
        assert_eq!(patched, before);
    }

    #[test]
    fn tags_and_part_boundaries_are_part_of_the_element() {
        assert_ne!(
            Sum::element(Tag::Hash, &["ab", "c"]),
            Sum::element(Tag::Hash, &["a", "bc"])
        );
        assert_ne!(
            Sum::element(Tag::Set, &["a"]),
            Sum::element(Tag::Members, &["a"])
        );
    }

    #[test]
    fn carries_and_borrows_cross_limbs() {
        let mut s = Sum([u64::MAX, u64::MAX, u64::MAX, u64::MAX]);
        s.add(Sum([1, 0, 0, 0]));
        assert_eq!(s, Sum::default());
        s.sub(Sum([1, 0, 0, 0]));
        assert_eq!(s, Sum([u64::MAX; 4]));
    }

    /// The documented Python check (docs/state.md) computes the same digest.
    #[test]
    fn the_documented_example_digest() {
        let s = sum(Tag::Set, [["app01"], ["db01"]]);
        assert_eq!(
            s.render(),
            "sum256:fe65b2b2ca11e5d12616d943cd4f40bc9c49eab03e28bdc39a344a301702e72e"
        );
    }
}
