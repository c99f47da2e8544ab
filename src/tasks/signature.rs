//! Argument signatures: which parameters a task takes, their JSON types, and
//! binding positional and keyword arguments to them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::TaskError;

/// JSON type a parameter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// A whole number that is zero or more.
    UInt,
    /// Any whole number.
    Int,
    /// Any number.
    Number,
    /// A string.
    String,
    /// true or false.
    Bool,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
    /// Anything.
    Any,
}

impl ParamType {
    fn accepts(self, value: &Value) -> bool {
        match self {
            Self::UInt => value.as_u64().is_some(),
            Self::Int => value.as_i64().is_some() || value.as_u64().is_some(),
            Self::Number => value.is_number(),
            Self::String => value.is_string(),
            Self::Bool => value.is_boolean(),
            Self::Array => value.is_array(),
            Self::Object => value.is_object(),
            Self::Any => true,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::UInt => "a non-negative integer",
            Self::Int => "an integer",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Bool => "a boolean",
            Self::Array => "an array",
            Self::Object => "an object",
            Self::Any => "any value",
        }
    }
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(n) if n.as_i64().is_some_and(|v| v < 0) => "a negative integer",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One named parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Name, usable as a keyword argument.
    pub name: String,
    /// Accepted type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Value used when the argument is left out; none makes it required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

impl Param {
    /// A required parameter.
    pub fn required(name: impl Into<String>, ty: ParamType) -> Self {
        Self {
            name: name.into(),
            ty,
            default: None,
        }
    }

    /// An optional parameter with a default.
    pub fn optional(name: impl Into<String>, ty: ParamType, default: Value) -> Self {
        Self {
            name: name.into(),
            ty,
            default: Some(default),
        }
    }
}

/// A task's parameters, in positional order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Named parameters.
    pub params: Vec<Param>,
    /// Name of the catch-all for extra positional arguments; none means
    /// extra arguments are an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<String>,
}

/// Arguments that do not fit a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// A required parameter got no value.
    #[error("missing argument {0:?}")]
    Missing(String),
    /// More positional arguments than parameters.
    #[error("takes at most {expected} positional argument(s), got {got}")]
    TooMany {
        /// Parameters accepted.
        expected: usize,
        /// Arguments given.
        got: usize,
    },
    /// A keyword that names no parameter.
    #[error("unexpected keyword argument {0:?}")]
    UnexpectedKeyword(String),
    /// A parameter given both positionally and by keyword.
    #[error("argument {0:?} given twice (positionally and by keyword)")]
    Duplicate(String),
    /// A value of the wrong type.
    #[error("argument {name:?} must be {expected}, got {got}")]
    Type {
        /// Parameter name.
        name: String,
        /// What it accepts.
        expected: &'static str,
        /// What it got.
        got: &'static str,
    },
}

impl Signature {
    /// A signature of these parameters and no catch-all.
    pub fn new(params: Vec<Param>) -> Self {
        Self { params, rest: None }
    }

    /// Accepts any extra positional arguments under `name`.
    #[must_use]
    pub fn with_rest(mut self, name: impl Into<String>) -> Self {
        self.rest = Some(name.into());
        self
    }

    /// Matches arguments to parameters, fills defaults and checks types.
    pub fn bind(&self, args: &[Value], kwargs: &Map<String, Value>) -> Result<BoundArgs, ArgError> {
        if self.rest.is_none() && args.len() > self.params.len() {
            return Err(ArgError::TooMany {
                expected: self.params.len(),
                got: args.len(),
            });
        }
        if let Some(unknown) = kwargs
            .keys()
            .find(|key| !self.params.iter().any(|p| &p.name == *key))
        {
            return Err(ArgError::UnexpectedKeyword(unknown.clone()));
        }
        let mut values = Vec::with_capacity(self.params.len());
        for (index, param) in self.params.iter().enumerate() {
            let value = match (args.get(index), kwargs.get(&param.name)) {
                (Some(_), Some(_)) => return Err(ArgError::Duplicate(param.name.clone())),
                (Some(value), None) | (None, Some(value)) => value.clone(),
                (None, None) => param
                    .default
                    .clone()
                    .ok_or_else(|| ArgError::Missing(param.name.clone()))?,
            };
            if !param.ty.accepts(&value) {
                return Err(ArgError::Type {
                    name: param.name.clone(),
                    expected: param.ty.describe(),
                    got: describe_value(&value),
                });
            }
            values.push((param.name.clone(), value));
        }
        let rest = args.get(self.params.len()..).unwrap_or_default().to_vec();
        Ok(BoundArgs { values, rest })
    }
}

/// Arguments bound to a signature: one value per parameter, plus extras.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoundArgs {
    values: Vec<(String, Value)>,
    rest: Vec<Value>,
}

impl BoundArgs {
    /// The value of a parameter.
    pub fn value(&self, name: &str) -> Result<&Value, TaskError> {
        self.values
            .iter()
            .find(|(param, _)| param == name)
            .map(|(_, value)| value)
            .ok_or_else(|| TaskError::fatal(format!("no parameter named {name:?}")))
    }

    /// A non-negative integer parameter.
    pub fn u64(&self, name: &str) -> Result<u64, TaskError> {
        self.value(name)?
            .as_u64()
            .ok_or_else(|| TaskError::fatal(format!("{name} must be a non-negative integer")))
    }

    /// A string parameter.
    pub fn str(&self, name: &str) -> Result<&str, TaskError> {
        self.value(name)?
            .as_str()
            .ok_or_else(|| TaskError::fatal(format!("{name} must be a string")))
    }

    /// Extra positional arguments beyond the named parameters.
    pub fn rest(&self) -> &[Value] {
        &self.rest
    }

    /// Every argument in positional order, extras last.
    pub fn to_positional(&self) -> Vec<Value> {
        self.values
            .iter()
            .map(|(_, value)| value.clone())
            .chain(self.rest.iter().cloned())
            .collect()
    }
}

/// Reads an argument typed by a person (on the command line or in the
/// window's form) as JSON when it is JSON (`5000`, `true`, `[1,2]`,
/// `"text"`), else as a plain string (`Random Forest`).
pub fn parse_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_arguments_are_json_when_they_parse_and_text_otherwise() {
        assert_eq!(parse_arg("5000"), json!(5000));
        assert_eq!(parse_arg("[1, 2]"), json!([1, 2]));
        assert_eq!(parse_arg("Random Forest"), json!("Random Forest"));
        assert_eq!(parse_arg("\"5000\""), json!("5000"));
    }

    fn sig() -> Signature {
        Signature::new(vec![
            Param::required("duration_ms", ParamType::UInt),
            Param::optional("label", ParamType::String, json!("x")),
        ])
    }

    #[test]
    fn binds_positional_keyword_and_default_values() {
        let bound = sig().bind(&[json!(5)], &Map::new()).expect("should bind");
        assert_eq!(bound.u64("duration_ms").ok(), Some(5));
        assert_eq!(bound.str("label").ok(), Some("x"));

        let mut kwargs = Map::new();
        kwargs.insert("label".into(), json!("y"));
        let bound = sig().bind(&[json!(7)], &kwargs).expect("should bind");
        assert_eq!(bound.to_positional(), vec![json!(7), json!("y")]);
    }

    #[test]
    fn rejects_each_kind_of_mismatch() {
        let none = Map::new();
        assert_eq!(
            sig().bind(&[], &none),
            Err(ArgError::Missing("duration_ms".into()))
        );
        assert!(matches!(
            sig().bind(&[json!(1), json!("a"), json!(2)], &none),
            Err(ArgError::TooMany {
                expected: 2,
                got: 3
            })
        ));
        assert!(matches!(
            sig().bind(&[json!(-1)], &none),
            Err(ArgError::Type {
                got: "a negative integer",
                ..
            })
        ));
        assert!(matches!(
            sig().bind(&[json!(1.5)], &none),
            Err(ArgError::Type { .. })
        ));
        let mut kwargs = Map::new();
        kwargs.insert("duration_ms".into(), json!(1));
        assert_eq!(
            sig().bind(&[json!(1)], &kwargs),
            Err(ArgError::Duplicate("duration_ms".into()))
        );
        let mut kwargs = Map::new();
        kwargs.insert("colour".into(), json!(1));
        assert_eq!(
            sig().bind(&[json!(1)], &kwargs),
            Err(ArgError::UnexpectedKeyword("colour".into()))
        );
    }

    #[test]
    fn rest_collects_extra_positional_arguments() {
        let variadic = Signature::new(vec![]).with_rest("args");
        let bound = variadic
            .bind(&[json!(1), json!("two")], &Map::new())
            .expect("should bind");
        assert_eq!(bound.rest(), &[json!(1), json!("two")]);
    }
}
