//! Values quoted in messages, bounded: a refusal names the field and shows
//! the value, but a value can be any size (a claim's field, a CNI config),
//! and a message that echoes 600 KB can never be written to a status (the
//! API server and etcd refuse requests that large), so nobody would ever
//! read it.

use std::fmt;

/// The most characters of a value a message quotes.
pub const EXCERPT_CHARS: usize = 100;

/// A value as a message quotes it: escaped and in quotes, like `{:?}`;
/// when longer than [`EXCERPT_CHARS`] characters, only its first ones,
/// then an ellipsis and its full length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excerpt<'a>(pub &'a str);

/// See [`Excerpt`].
pub fn excerpt(value: &str) -> Excerpt<'_> {
    Excerpt(value)
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(EXCERPT_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes in all)", &self.0[..cut], self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(excerpt("net1").to_string(), "\"net1\"");
        assert_eq!(excerpt("a\"b").to_string(), "\"a\\\"b\"");
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact).to_string(), format!("{exact:?}"));
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "x".repeat(600_000);
        let shown = excerpt(&long).to_string();
        assert_eq!(
            shown,
            format!("\"{}\"... (600000 bytes in all)", "x".repeat(EXCERPT_CHARS))
        );
    }

    #[test]
    fn multibyte_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(EXCERPT_CHARS + 1);
        let shown = excerpt(&long).to_string();
        assert!(shown.starts_with(&format!("\"{}\"...", "é".repeat(EXCERPT_CHARS))));
        assert!(shown.ends_with(&format!("({} bytes in all)", long.len())));
    }
}
