//! JSON Pointers (RFC 6901): validated once when an operation is parsed, decoded lazily.
//!
//! A pointer keeps only its text. Reference tokens are sliced out of it on demand and unescaped
//! only when they contain `~`, so parsing a patch allocates one string per pointer and walking a
//! pointer allocates nothing in the common case.

use std::borrow::Cow;
use std::fmt;

/// A syntactically valid JSON Pointer: `""` (the whole document) or `/token/token...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pointer {
    text: String,
}

/// Why a string is not a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPointer(&'static str);

impl fmt::Display for InvalidPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidPointer {}

/// A reference token read as an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArrayIndex {
    /// A non-negative decimal without leading zeros.
    At(usize),
    /// `-`: the (nonexistent) element after the last one.
    End,
}

impl Pointer {
    /// Checks `text` against RFC 6901.
    pub fn parse(text: impl Into<String>) -> Result<Self, InvalidPointer> {
        let text = text.into();
        validate(&text)?;
        Ok(Self { text })
    }

    /// Wraps text that [`validate`] accepted.
    pub(crate) fn new_unchecked(text: String) -> Self {
        Self { text }
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for `""`, the whole document.
    pub fn is_root(&self) -> bool {
        self.text.is_empty()
    }

    /// The decoded reference tokens, first to last.
    pub fn tokens(&self) -> impl Iterator<Item = Cow<'_, str>> + Clone {
        raw_tokens(&self.text).map(unescape)
    }

    /// The tokens of the parent location and the last token; `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(ParentTokens<'_>, Cow<'_, str>)> {
        let cut = self.text.rfind('/')?;
        Some((
            ParentTokens(&self.text[..cut]),
            unescape(&self.text[cut + 1..]),
        ))
    }

    /// True when `self` names a location strictly inside `other`.
    pub(crate) fn is_proper_descendant_of(&self, other: &Pointer) -> bool {
        // Tokens cannot contain an unescaped '/', so a textual prefix that ends at a '/'
        // boundary is exactly a token-wise prefix.
        self.text.len() > other.text.len()
            && self.text.starts_with(&other.text)
            && self.text.as_bytes()[other.text.len()] == b'/'
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The tokens of a pointer's parent, borrowed from the pointer text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParentTokens<'a>(&'a str);

impl<'a> ParentTokens<'a> {
    pub(crate) fn tokens(self) -> impl Iterator<Item = Cow<'a, str>> + Clone {
        raw_tokens(self.0).map(unescape)
    }
}

fn raw_tokens(text: &str) -> impl Iterator<Item = &str> + Clone {
    // `"".split('/')` yields one empty token; the root has none. Skip the leading '/'.
    let rest = text.strip_prefix('/');
    rest.into_iter().flat_map(|r| r.split('/'))
}

pub(crate) fn validate(text: &str) -> Result<(), InvalidPointer> {
    if text.is_empty() {
        return Ok(());
    }
    if !text.starts_with('/') {
        return Err(InvalidPointer("a JSON Pointer is empty or starts with '/'"));
    }
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(InvalidPointer(
                "'~' must be followed by '0' or '1' in a JSON Pointer",
            ));
        }
    }
    Ok(())
}

fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        // Order matters (RFC 6901 §4): "~01" is "~1", not "/".
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Reads a reference token as an array index (RFC 6901 §4: `0` or a digit 1-9 followed by
/// digits; RFC 6902 adds `-`). Anything else, including `01`, `+1`, `1e0` and `-1`, is not one.
pub(crate) fn array_index(token: &str) -> Option<ArrayIndex> {
    match token.as_bytes() {
        b"-" => Some(ArrayIndex::End),
        b"0" => Some(ArrayIndex::At(0)),
        [b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => {
            // An index too large for usize cannot exist in memory: map it to usize::MAX, which
            // every bounds check rejects.
            Some(ArrayIndex::At(token.parse().unwrap_or(usize::MAX)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn toks(p: &str) -> Vec<String> {
        Pointer::parse(p)
            .unwrap()
            .tokens()
            .map(Cow::into_owned)
            .collect()
    }

    #[test]
    fn tokens_are_decoded() {
        assert!(toks("").is_empty());
        assert_eq!(toks("/"), [""]);
        assert_eq!(toks("/a/"), ["a", ""]);
        assert_eq!(toks("/a~1b/m~0n/~01"), ["a/b", "m~n", "~1"]);
    }

    #[test]
    fn syntax_is_checked() {
        assert!(Pointer::parse("a").is_err());
        assert!(Pointer::parse("/a~").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert!(Pointer::parse("/~0~1").is_ok());
    }

    #[test]
    fn split_last_returns_parent_and_leaf() {
        let p = Pointer::parse("/a/b~1c").unwrap();
        let (parent, last) = p.split_last().unwrap();
        assert_eq!(parent.tokens().collect::<Vec<_>>(), ["a"]);
        assert_eq!(last, "b/c");
        let p = Pointer::parse("/x").unwrap();
        let (parent, last) = p.split_last().unwrap();
        assert_eq!(parent.tokens().count(), 0);
        assert_eq!(last, "x");
        assert!(Pointer::parse("").unwrap().split_last().is_none());
    }

    #[test]
    fn array_indices_follow_rfc_6901() {
        assert_eq!(array_index("0"), Some(ArrayIndex::At(0)));
        assert_eq!(array_index("10"), Some(ArrayIndex::At(10)));
        assert_eq!(array_index("-"), Some(ArrayIndex::End));
        assert_eq!(
            array_index("99999999999999999999999"),
            Some(ArrayIndex::At(usize::MAX))
        );
        for bad in ["", "01", "00", "+1", "-1", "1e0", "a", " 1"] {
            assert_eq!(array_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn descendant_check_respects_token_boundaries() {
        let p = |s| Pointer::parse(s).unwrap();
        assert!(p("/a/b").is_proper_descendant_of(&p("/a")));
        assert!(p("/a/").is_proper_descendant_of(&p("/a")));
        assert!(!p("/ab").is_proper_descendant_of(&p("/a")));
        assert!(!p("/a").is_proper_descendant_of(&p("/a")));
        assert!(p("/a").is_proper_descendant_of(&p("")));
    }
}
