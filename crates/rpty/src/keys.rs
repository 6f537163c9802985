//! [`DetachKey`]: the key that leaves a session running and returns to the
//! shell, as the user writes it (`ctrl-\`, `^A`, `C-b`, `none`).

use std::fmt;
use std::str::FromStr;

/// The key that detaches the client from its session, or none.
///
/// Written as `ctrl-X`, `C-X` or `^X` for a control character (`X` a
/// letter or one of `@ [ \ ] ^ _ ?`, case-insensitive), or `none` to
/// disable detaching by key. The default is Ctrl-\ (byte `0x1c`).
///
/// Keys that a terminal also sends as, or at the start of, other keys are
/// refused, since pressing those would detach: Ctrl-[ (Escape, which starts
/// the arrow and function keys), Ctrl-I (Tab), Ctrl-J and Ctrl-M (Enter),
/// Ctrl-H and Ctrl-? (Backspace).
///
/// ```
/// use rpty::DetachKey;
///
/// let key: DetachKey = "ctrl-a".parse()?;
/// assert_eq!(key.byte(), Some(0x01));
/// assert_eq!("^\\".parse::<DetachKey>()?, DetachKey::default());
/// assert_eq!("none".parse::<DetachKey>()?.byte(), None);
/// assert_eq!(DetachKey::default().to_string(), "Ctrl-\\");
/// assert!("ctrl-1".parse::<DetachKey>().is_err());
/// assert!("ctrl-[".parse::<DetachKey>().unwrap_err().to_string().contains("Escape"));
/// # Ok::<(), rpty::ParseKeyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DetachKey(Option<u8>);

impl DetachKey {
    /// Ctrl-\, the default.
    pub const DEFAULT: DetachKey = DetachKey(Some(0x1c));

    /// The byte the terminal sends for the key, or `None` when detaching
    /// by key is disabled.
    pub fn byte(self) -> Option<u8> {
        self.0
    }

    /// The key that sends `byte` (as [`byte`](Self::byte) gives it; `None`:
    /// no key), taken as it is, without the checks of parsing.
    pub(crate) fn from_byte(byte: Option<u8>) -> DetachKey {
        DetachKey(byte)
    }

    /// Where the key is in `input`, if it is there.
    ///
    /// ```
    /// let key = rpty::DetachKey::default();
    /// assert_eq!(key.find(b"ls\x1cmore"), Some(2));
    /// assert_eq!(key.find(b"ls\r"), None);
    /// ```
    pub fn find(self, input: &[u8]) -> Option<usize> {
        let byte = self.0?;
        input.iter().position(|&b| b == byte)
    }
}

impl Default for DetachKey {
    fn default() -> Self {
        DetachKey::DEFAULT
    }
}

impl fmt::Display for DetachKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(0x7f) => f.write_str("Ctrl-?"),
            Some(byte) => write!(f, "Ctrl-{}", char::from(byte ^ 0x40).to_ascii_uppercase()),
        }
    }
}

/// Why a detach key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseKeyError {
    /// Not `ctrl-X`, `C-X`, `^X` or `none`.
    #[error("{input:?} is not a key: write ctrl-X, C-X or ^X (X a letter or one of @[\\]^_?), or none")]
    NotAKey {
        /// What was written.
        input: String,
    },
    /// A key the terminal also sends for other keys.
    #[error("{input:?} cannot detach: {why}; choose another, e.g. ctrl-\\ or ctrl-]")]
    Refused {
        /// What was written.
        input: String,
        /// What else sends it.
        why: &'static str,
    },
}

/// What else a terminal sends a control byte for, when that makes the
/// byte unusable as the detach key.
fn conflict(byte: u8) -> Option<&'static str> {
    match byte {
        0x1b => Some("it is Escape, which also starts the arrow, function and Alt keys"),
        0x09 => Some("it is the Tab key"),
        0x0a | 0x0d => Some("it is the Enter key"),
        0x08 | 0x7f => Some("it is the Backspace key"),
        _ => None,
    }
}

impl FromStr for DetachKey {
    type Err = ParseKeyError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseKeyError::NotAKey { input: input.to_owned() };
        if input.eq_ignore_ascii_case("none") {
            return Ok(DetachKey(None));
        }
        let lower = input.to_ascii_lowercase();
        let rest =
            ["ctrl-", "ctrl+", "c-", "^"].iter().find_map(|prefix| lower.strip_prefix(prefix)).ok_or_else(error)?;
        let mut chars = rest.chars();
        let (Some(key), None) = (chars.next(), chars.next()) else { return Err(error()) };
        let byte = match key.to_ascii_uppercase() {
            '?' => 0x7f,
            key @ ('@'..='_') => key as u8 ^ 0x40,
            _ => return Err(error()),
        };
        match conflict(byte) {
            Some(why) => Err(ParseKeyError::Refused { input: input.to_owned(), why }),
            None => Ok(DetachKey(Some(byte))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_control_key_parses_to_its_byte() {
        for spelling in ["ctrl-b", "Ctrl-B", "CTRL+b", "C-b", "c-B", "^b", "^B"] {
            assert_eq!(spelling.parse::<DetachKey>().unwrap().byte(), Some(0x02), "{spelling}");
        }
        assert_eq!("ctrl-@".parse::<DetachKey>().unwrap().byte(), Some(0x00));
        assert_eq!("ctrl-]".parse::<DetachKey>().unwrap().byte(), Some(0x1d));
        assert_eq!("ctrl-_".parse::<DetachKey>().unwrap().byte(), Some(0x1f));
    }

    #[test]
    fn keys_that_other_keys_send_are_refused_with_the_reason() {
        for (spelling, what) in [
            ("ctrl-[", "Escape"),
            ("^[", "Escape"),
            ("C-i", "Tab"),
            ("ctrl-m", "Enter"),
            ("ctrl-j", "Enter"),
            ("ctrl-h", "Backspace"),
            ("ctrl-?", "Backspace"),
        ] {
            let err = spelling.parse::<DetachKey>().unwrap_err();
            assert!(matches!(err, ParseKeyError::Refused { .. }), "{spelling}: {err:?}");
            let text = err.to_string();
            assert!(text.contains(what) && !text.contains('\n'), "{spelling}: {text}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_a_message_that_says_what_is_accepted() {
        for bad in ["", "a", "ctrl-", "ctrl-ab", "ctrl-1", "alt-x", "^é"] {
            let err = bad.parse::<DetachKey>().unwrap_err();
            assert!(err.to_string().contains("ctrl-X"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for byte in (0x00..=0x1f).filter(|&byte| conflict(byte).is_none()) {
            let key = DetachKey(Some(byte));
            assert_eq!(key.to_string().parse::<DetachKey>().unwrap(), key);
        }
        assert_eq!(DetachKey(None).to_string().parse::<DetachKey>().unwrap(), DetachKey(None));
    }
}
