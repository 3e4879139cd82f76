//! Typed reads from `serde_json` objects that name the field on failure
//! (`ipam.ipRanges[1].range: expected a string, found number 5`), which
//! serde's derive cannot do.

use serde_json::{Map, Value};

/// A short description of a JSON value for error messages.
pub(crate) fn describe(v: &Value) -> String {
    const MAX: usize = 64;
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > MAX => {
            format!("string {:?}...", s.chars().take(MAX).collect::<String>())
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Joins a path and a key: `ipam` + `range` = `ipam.range`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// An array entry that is an object, with its indexed path (`ipam.routes[2]`).
pub(crate) type Entry<'a> = (String, &'a Map<String, Value>);

/// One JSON object and where it sits in the document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Obj<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) path: &'a str,
}

/// A value of the wrong JSON type, with the field's full name (the
/// configuration's own error type takes it in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrongType {
    pub(crate) field: String,
    pub(crate) expected: &'static str,
    pub(crate) found: String,
}

fn wrong(field: String, expected: &'static str, found: &Value) -> WrongType {
    WrongType {
        field,
        expected,
        found: describe(found),
    }
}

impl<'a> Obj<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>, path: &'a str) -> Self {
        Obj { map, path }
    }

    /// The full name of `key`.
    pub(crate) fn field(&self, key: &str) -> String {
        join(self.path, key)
    }

    /// The value of `key`; `null` counts as absent, as in Go.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, WrongType> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(self.field(key), "a string", v)),
        }
    }

    /// A string where `""` counts as absent (Go's zero value).
    pub(crate) fn nonempty_str(&self, key: &str) -> Result<Option<&'a str>, WrongType> {
        Ok(self.str(key)?.filter(|s| !s.is_empty()))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, WrongType> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong(self.field(key), "true or false", v)),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, WrongType> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong(self.field(key), "an integer", v)),
            Some(v) => Err(wrong(self.field(key), "an integer", v)),
        }
    }

    pub(crate) fn array(&self, key: &str) -> Result<&'a [Value], WrongType> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(wrong(self.field(key), "an array", v)),
        }
    }

    pub(crate) fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, WrongType> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(wrong(self.field(key), "an object", v)),
        }
    }

    /// An array of strings (`null` entries are refused too).
    pub(crate) fn str_array(&self, key: &str) -> Result<Vec<&'a str>, WrongType> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(wrong(
                    format!("{}[{i}]", self.field(key)),
                    "a string",
                    other,
                )),
            })
            .collect()
    }

    /// An array of objects, each with its indexed path.
    pub(crate) fn objects(&self, key: &str) -> Result<Vec<Entry<'a>>, WrongType> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let field = format!("{}[{i}]", self.field(key));
                match v {
                    Value::Object(m) => Ok((field, m)),
                    other => Err(wrong(field, "an object", other)),
                }
            })
            .collect()
    }
}
