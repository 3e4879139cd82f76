//! A word to the admin about something accepted (e.g. a deprecated
//! option), gathered while parsing and shown as a Warning event on the NAD.

use std::fmt;

/// Something accepted that deserves a word to the admin (e.g. as a Warning
/// event on the NAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
