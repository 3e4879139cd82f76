//! CNI errors: a code from the spec (or ours, 100 and up) and a message
//! that names the field or value at fault, printed on stdout as the spec's
//! error document.

use serde_json::{Value, json};

/// Codes of the CNI specification, and hereabouts' own from 100.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODING: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The range has no free address.
    pub const EXHAUSTED: u32 = 100;
    /// A requested static address is held by someone else.
    pub const STATIC_ADDRESS_TAKEN: u32 = 101;
    /// A requested static address is not one the ranges hand out.
    pub const STATIC_ADDRESS_NOT_ALLOCATABLE: u32 = 102;
    /// CHECK found the attachment's addresses changed.
    pub const CHECK_FAILED: u32 = 103;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
        }
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN_LATER, msg)
    }

    /// The error document, in `cni_version` (the spec's own when unknown).
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        })
    }
}

impl From<hereabouts_core::ConfigError> for CniError {
    fn from(e: hereabouts_core::ConfigError) -> Self {
        CniError::invalid_config(e.to_string())
    }
}

impl From<hereabouts_core::RequestError> for CniError {
    fn from(e: hereabouts_core::RequestError) -> Self {
        CniError::invalid_config(e.to_string())
    }
}
