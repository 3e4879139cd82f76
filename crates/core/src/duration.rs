//! Durations from input, bounded: a NAD's `request_timeout` and the
//! controller's duration flags. An unbounded duration from input ends in a
//! panic far from where it entered (`Duration::from_secs_f64(1e300)`,
//! `Instant + Duration` near 1e19 s), so every duration is checked against
//! sane limits where it is parsed, with an error naming the field and value.
//!
//! ```
//! use std::time::Duration;
//! use hereabouts_core::duration::{self, Bounds};
//!
//! let bounds = Bounds::new(Duration::from_millis(1), Duration::from_secs(3600));
//! assert_eq!(duration::parse_text("--gc-grace", "90s", bounds)?, Duration::from_secs(90));
//! let e = duration::parse_text("--gc-grace", "1000000000y", bounds).unwrap_err();
//! assert!(e.to_string().starts_with("--gc-grace: \"1000000000y\""));
//! # Ok::<(), duration::DurationError>(())
//! ```

use std::time::Duration;

use serde_json::Value;

use super::json::describe;

/// The inclusive range a duration must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: Duration,
    pub max: Duration,
}

impl Bounds {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Bounds { min, max }
    }

    fn check(self, field: &str, value: String, d: Duration) -> Result<Duration, DurationError> {
        if d < self.min || d > self.max {
            return Err(DurationError::OutOfBounds {
                field: field.to_owned(),
                value,
                min: self.min,
                max: self.max,
            });
        }
        Ok(d)
    }
}

/// `ipam.request_timeout`: how long ADD waits for the allocator. One hour
/// is far beyond any runtime's own CNI timeout (kubelet's is minutes).
pub const REQUEST_TIMEOUT: Bounds =
    Bounds::new(Duration::from_millis(1), Duration::from_secs(3600));

/// A NAD's `hold_released` and `release_cooldown`: the bounds of the
/// controller's `--hold-released` and `--release-cooldown`.
pub const REST: Bounds = Bounds::new(Duration::ZERO, Duration::from_secs(24 * 3600));

/// Why a duration is refused; both variants name the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{field}: {value} is not a duration: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{field}: {value} is out of bounds: must be from {} to {}",
        humantime::format_duration(*.min), humantime::format_duration(*.max))]
    OutOfBounds {
        field: String,
        value: String,
        min: Duration,
        max: Duration,
    },
}

impl DurationError {
    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            DurationError::Invalid { field, .. } | DurationError::OutOfBounds { field, .. } => {
                field
            }
        }
    }

    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DurationError::Invalid { .. } => "invalid_duration",
            DurationError::OutOfBounds { .. } => "duration_out_of_bounds",
        }
    }
}

/// A duration written as text with units (`"30s"`, `"1h 5m"`, `"250ms"`).
pub fn parse_text(field: &str, text: &str, bounds: Bounds) -> Result<Duration, DurationError> {
    let value = quoted(text);
    let d = humantime::parse_duration(text).map_err(|e| DurationError::Invalid {
        field: field.to_owned(),
        value: value.clone(),
        reason: e.to_string(),
    })?;
    bounds.check(field, value, d)
}

/// A number of seconds (fractions allowed).
pub fn from_seconds(field: &str, seconds: f64, bounds: Bounds) -> Result<Duration, DurationError> {
    seconds_shown(field, seconds, format!("{seconds:?}"), bounds)
}

fn seconds_shown(
    field: &str,
    seconds: f64,
    value: String,
    bounds: Bounds,
) -> Result<Duration, DurationError> {
    if !seconds.is_finite() {
        return Err(DurationError::Invalid {
            field: field.to_owned(),
            value,
            reason: "not a finite number of seconds".to_owned(),
        });
    }
    // Compared as floats first: no conversion of an absurd number happens.
    if seconds < bounds.min.as_secs_f64() || seconds > bounds.max.as_secs_f64() {
        return Err(DurationError::OutOfBounds {
            field: field.to_owned(),
            value,
            min: bounds.min,
            max: bounds.max,
        });
    }
    let d = Duration::try_from_secs_f64(seconds).map_err(|e| DurationError::Invalid {
        field: field.to_owned(),
        value: value.clone(),
        reason: e.to_string(),
    })?;
    bounds.check(field, value, d)
}

/// A JSON value: a number of seconds or a string with units.
pub fn from_json(field: &str, value: &Value, bounds: Bounds) -> Result<Duration, DurationError> {
    match value {
        Value::Number(n) => match n.as_f64() {
            // Shown as written: `1e300`, not three hundred digits.
            Some(s) => seconds_shown(field, s, n.to_string(), bounds),
            None => Err(DurationError::Invalid {
                field: field.to_owned(),
                value: n.to_string(),
                reason: "not a number of seconds".to_owned(),
            }),
        },
        Value::String(s) => parse_text(field, s, bounds),
        other => Err(DurationError::Invalid {
            field: field.to_owned(),
            value: describe(other),
            reason: "expected seconds or a duration like \"30s\"".to_owned(),
        }),
    }
}

/// The value as it appears in a message: quoted, and cut when long.
pub(crate) fn quoted(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() > MAX {
        format!("{:?}...", text.chars().take(MAX).collect::<String>())
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const B: Bounds = Bounds::new(Duration::from_millis(10), Duration::from_secs(3600));

    #[test]
    fn values_within_bounds_are_accepted() {
        let ok: &[(Value, Duration)] = &[
            (json!(30), Duration::from_secs(30)),
            (json!(0.5), Duration::from_millis(500)),
            (json!(3600), Duration::from_secs(3600)),
            (json!("10ms"), Duration::from_millis(10)),
            (json!("1h"), Duration::from_secs(3600)),
            (json!("1m 30s"), Duration::from_secs(90)),
        ];
        for (value, want) in ok {
            assert_eq!(from_json("f", value, B).as_ref(), Ok(want), "{value}");
        }
    }

    #[test]
    fn every_refusal_names_the_field_and_value() {
        // (name, input, text the message must hold besides the field)
        let cases: &[(&str, Value, &str)] = &[
            ("huge float", json!(1e300), "1e+300"),
            ("near u64 seconds", json!(1e19), "1e+19"),
            ("u64 max", json!(u64::MAX), "18446744073709551615"),
            ("just over the max", json!(3600.001), "3600.001"),
            ("zero", json!(0), "0"),
            ("negative", json!(-1), "-1"),
            ("negative zero", json!(-0.0), "-0"),
            ("tiny", json!(1e-300), "1e-300"),
            ("below the min", json!(0.009), "0.009"),
            ("i64 min", json!(i64::MIN), "-9223372036854775808"),
            ("text without unit", json!("30"), "\"30\""),
            ("text words", json!("soon"), "\"soon\""),
            ("empty text", json!(""), "\"\""),
            (
                "text huge",
                json!("1000000000000000000000s"),
                "\"1000000000000000000000s\"",
            ),
            ("text years", json!("1000000000y"), "\"1000000000y\""),
            ("text over the max", json!("2h"), "\"2h\""),
            ("text zero", json!("0s"), "\"0s\""),
            ("text negative", json!("-5s"), "\"-5s\""),
            ("text nan", json!("NaN"), "\"NaN\""),
            ("boolean", json!(true), "boolean true"),
            ("null", Value::Null, "null"),
            ("array", json!([30]), "an array of 1"),
            ("object", json!({"s": 30}), "an object"),
            ("long text", json!("9".repeat(10_000)), "999999"),
        ];
        for (name, value, shown) in cases {
            let e = from_json("ipam.request_timeout", value, B)
                .expect_err(name)
                .to_string();
            assert!(e.starts_with("ipam.request_timeout: "), "{name}: {e}");
            assert!(e.contains(shown), "{name}: {e} does not show {shown}");
            assert!(e.len() < 300, "{name}: message stays short: {e}");
        }
    }

    #[test]
    fn out_of_bounds_says_the_bounds() {
        let e = parse_text("--gc-grace", "2h", B).expect_err("over");
        assert_eq!(
            e.to_string(),
            "--gc-grace: \"2h\" is out of bounds: must be from 10ms to 1h"
        );
        assert_eq!(e.field(), "--gc-grace");
        assert_eq!(e.metric_label(), "duration_out_of_bounds");
    }

    #[test]
    fn no_input_panics() {
        for s in [
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            f64::NAN,
            f64::INFINITY,
            1.8446744073709552e19,
        ] {
            let _ = from_seconds("f", s, B);
            let _ = from_seconds("f", s, Bounds::new(Duration::ZERO, Duration::MAX));
        }
    }
}
