//! FastAPI/pydantic v2 look-alike responses: `{"detail": "..."}` errors and 422
//! `{"detail": [{"type", "loc", "msg", "input", "ctx"?}]}` validation errors, plus a small body
//! validator that reproduces pydantic's lax-mode coercions and messages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A JSON response (content type `application/json`).
pub fn json_response(status: u16, body: &Value) -> Response {
    let mut resp =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Makes any response JSON: a non-JSON body (an extractor's plain-text rejection) becomes
/// `{"detail": "<text>"}`; an empty 204 keeps no body but gets the JSON content type.
pub async fn ensure_json(resp: Response) -> Response {
    let is_json =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let status = resp.status().as_u16();
    if status == 204 {
        let mut resp = resp;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap_or_default();
    detail(status, String::from_utf8_lossy(&bytes).trim())
}

/// FastAPI's `HTTPException(status, detail)`: `{"detail": "..."}`.
pub fn detail(status: u16, msg: &str) -> Response {
    json_response(status, &json!({ "detail": msg }))
}

/// One pydantic validation error.
#[derive(Debug, Clone)]
pub struct ValidationError {
    pub kind: &'static str,
    pub loc: Vec<Value>,
    pub msg: String,
    pub input: Value,
    pub ctx: Option<Value>,
}

impl ValidationError {
    pub fn new(kind: &'static str, loc: Vec<Value>, msg: impl Into<String>, input: Value) -> Self {
        ValidationError { kind, loc, msg: msg.into(), input, ctx: None }
    }

    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.kind));
        m.insert("loc".into(), Value::Array(self.loc.clone()));
        m.insert("msg".into(), json!(self.msg));
        m.insert("input".into(), self.input.clone());
        if let Some(ctx) = &self.ctx {
            m.insert("ctx".into(), ctx.clone());
        }
        Value::Object(m)
    }
}

/// A 422 with these errors.
pub fn validation(errors: &[ValidationError]) -> Response {
    json_response(422, &json!({ "detail": errors.iter().map(ValidationError::to_json).collect::<Vec<_>>() }))
}

/// A 422 with one `value_error` at `loc`.
pub fn value_error(loc: Vec<Value>, msg: &str, input: Value) -> Response {
    validation(&[ValidationError::new("value_error", loc, format!("Value error, {msg}"), input)
        .with_ctx(json!({ "error": msg }))])
}

/// Parses a JSON request body that must be an object (a pydantic model).
pub fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(validation(&[ValidationError::new("missing", vec![json!("body")], "Field required", Value::Null)]));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(validation(&[ValidationError::new(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        )])),
        Err(e) => {
            // FastAPI reports the character offset of the error.
            let offset = line_col_to_offset(bytes, e.line(), e.column());
            Err(validation(&[ValidationError::new(
                "json_invalid",
                vec![json!("body"), json!(offset)],
                "JSON decode error",
                json!({}),
            )
            .with_ctx(json!({ "error": "Expecting value" }))]))
        }
    }
}

fn line_col_to_offset(bytes: &[u8], line: usize, col: usize) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line {
            return offset + col.saturating_sub(1);
        }
        offset += l.chars().count() + 1;
    }
    offset
}

/// Reads fields of a body object, collecting pydantic-style errors.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    pub errors: Vec<ValidationError>,
}

fn loc(field: &str) -> Vec<Value> {
    vec![json!("body"), json!(field)]
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Fields { obj, errors: Vec::new() }
    }

    fn missing(&mut self, field: &str) {
        self.errors.push(ValidationError::new(
            "missing",
            loc(field),
            "Field required",
            Value::Object(self.obj.clone()),
        ));
    }

    /// A required string (pydantic does not turn numbers into strings).
    pub fn string(&mut self, field: &str) -> Option<String> {
        match self.obj.get(field) {
            None => {
                self.missing(field);
                None
            }
            Some(v) => self.string_value(field, v),
        }
    }

    /// An optional (nullable) string.
    pub fn opt_string(&mut self, field: &str) -> Option<String> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => self.string_value(field, v),
        }
    }

    fn string_value(&mut self, field: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.errors.push(ValidationError::new(
                    "string_type",
                    loc(field),
                    "Input should be a valid string",
                    other.clone(),
                ));
                None
            }
        }
    }

    /// A required integer (lax: `"12"`, `12.0` and booleans are accepted, as pydantic does).
    pub fn int(&mut self, field: &str) -> Option<i64> {
        match self.obj.get(field) {
            None => {
                self.missing(field);
                None
            }
            Some(v) => self.int_at(loc(field), v),
        }
    }

    /// An optional (nullable) integer.
    pub fn opt_int(&mut self, field: &str) -> Option<i64> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => self.int_at(loc(field), v),
        }
    }

    /// Validates `v` as an integer at `loc`.
    pub fn int_at(&mut self, loc: Vec<Value>, v: &Value) -> Option<i64> {
        match int_value(v) {
            Ok(i) => Some(i),
            Err((kind, msg)) => {
                self.errors.push(ValidationError::new(kind, loc, msg, v.clone()));
                None
            }
        }
    }

    /// An optional (nullable) boolean.
    pub fn opt_bool(&mut self, field: &str) -> Option<bool> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => Some(n.as_i64() == Some(1)),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
                "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
                _ => {
                    self.errors.push(ValidationError::new(
                        "bool_parsing",
                        loc(field),
                        "Input should be a valid boolean, unable to interpret input",
                        json!(s),
                    ));
                    None
                }
            },
            Some(other) => {
                self.errors.push(ValidationError::new(
                    "bool_type",
                    loc(field),
                    "Input should be a valid boolean",
                    other.clone(),
                ));
                None
            }
        }
    }

    /// An optional string among `allowed`, `default` when absent.
    pub fn enum_or(&mut self, field: &str, allowed: &[&str], default: &str) -> Option<String> {
        match self.obj.get(field) {
            None => Some(default.to_string()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Some(s.clone()),
            Some(other) => {
                let expected = enum_expected(allowed);
                self.errors.push(
                    ValidationError::new("enum", loc(field), format!("Input should be {expected}"), other.clone())
                        .with_ctx(json!({ "expected": expected })),
                );
                None
            }
        }
    }

    /// An optional (nullable) object.
    pub fn opt_object(&mut self, field: &str) -> Option<Map<String, Value>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => {
                self.errors.push(ValidationError::new(
                    "model_attributes_type",
                    loc(field),
                    "Input should be a valid dictionary or object to extract fields from",
                    other.clone(),
                ));
                None
            }
        }
    }

    /// A required list.
    pub fn list(&mut self, field: &str) -> Option<Vec<Value>> {
        match self.obj.get(field) {
            None => {
                self.missing(field);
                None
            }
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                self.errors.push(ValidationError::new(
                    "list_type",
                    loc(field),
                    "Input should be a valid list",
                    other.clone(),
                ));
                None
            }
        }
    }

    /// `Ok` when no error was collected, the 422 otherwise.
    pub fn finish(self) -> Result<(), Response> {
        if self.errors.is_empty() { Ok(()) } else { Err(validation(&self.errors)) }
    }
}

/// `'a', 'b' or 'c'`, as pydantic words an enum's values.
pub fn enum_expected(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// Pydantic's lax integer: the error type and message when not one.
pub fn int_value(v: &Value) -> Result<i64, (&'static str, &'static str)> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.2e18 {
                    Ok(f as i64)
                } else {
                    Err(("int_from_float", "Input should be a valid integer, got a number with a fractional part"))
                }
            } else {
                Err(("int_type", "Input should be a valid integer"))
            }
        }
        Value::Bool(b) => Ok(*b as i64),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| ("int_parsing", "Input should be a valid integer, unable to parse string as an integer")),
        _ => Err(("int_type", "Input should be a valid integer")),
    }
}

/// Parses an integer path or query parameter; the 422 (`loc: [where, name]`) otherwise.
pub fn int_param(place: &str, name: &str, raw: &str) -> Result<i64, Response> {
    raw.parse::<i64>().map_err(|_| {
        validation(&[ValidationError::new(
            "int_parsing",
            vec![json!(place), json!(name)],
            "Input should be a valid integer, unable to parse string as an integer",
            json!(raw),
        )])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_wording() {
        assert_eq!(
            enum_expected(&["bulk-images", "video", "commonformat-ios"]),
            "'bulk-images', 'video' or 'commonformat-ios'"
        );
        assert_eq!(enum_expected(&["a"]), "'a'");
    }

    #[test]
    fn lax_ints() {
        assert_eq!(int_value(&json!(5)), Ok(5));
        assert_eq!(int_value(&json!(5.0)), Ok(5));
        assert_eq!(int_value(&json!("7")), Ok(7));
        assert_eq!(int_value(&json!(5.5)).unwrap_err().0, "int_from_float");
        assert_eq!(int_value(&json!("x")).unwrap_err().0, "int_parsing");
        assert_eq!(int_value(&json!([1])).unwrap_err().0, "int_type");
    }

    #[test]
    fn fields_collect_every_error() {
        let body = json!({ "bytesize": "abc" });
        let obj = body.as_object().unwrap();
        let mut f = Fields::new(obj);
        assert!(f.string("name").is_none());
        assert!(f.int("bytesize").is_none());
        let kinds: Vec<_> = f.errors.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["missing", "int_parsing"]);
        assert_eq!(f.errors[0].loc, vec![json!("body"), json!("name")]);
    }
}
