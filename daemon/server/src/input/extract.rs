//! `--jq` (run by jaq) and `--jsonpath` (RFC 9535, by `serde_json_path`).

use std::collections::HashSet;

use jaq_core::compile::Undefined;
use jaq_core::data::JustLut;
use jaq_core::load::{Arena, File, Loader, lex, parse};
use jaq_core::{Compiler, Ctx, Filter, Vars};
use jaq_json::{Num, Rc, Val};
use serde_json::{Map, Number, Value};
use serde_json_path::JsonPath;

use super::{DecodeError, ExtractKind, json_kind};

/// The most results a `--jq` filter may produce for one line. A filter that
/// produces more (for example `repeat(.)`) fails the line with
/// [`DecodeError::TooManyResults`] instead of exhausting memory.
pub const MAX_JQ_OUTPUTS: usize = 100_000;

/// A compiled jq filter.
pub(crate) struct JqFilter {
    filter: Filter<JustLut<Val>>,
}

impl JqFilter {
    /// Parses and compiles `code` with jaq's core, standard and JSON
    /// libraries. The error is a one-line reason.
    pub(crate) fn compile(code: &str) -> Result<JqFilter, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(&arena, File { code, path: () })
            .map_err(|errors| {
                let reasons = errors
                    .into_iter()
                    .flat_map(|(file, error)| load_error_reasons(file.code, error).into_iter());
                join(reasons)
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let reasons = errors.into_iter().flat_map(|(_, undefined)| {
                    undefined.into_iter().map(|(name, what)| match what {
                        Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                        other => format!("undefined {} `{name}`", other.as_str()),
                    })
                });
                join(reasons)
            })?;
        Ok(JqFilter { filter })
    }

    /// Parses `line` as JSON, runs the filter on it and appends every result
    /// to `out`; each must be an object. May append some results before
    /// failing: the caller truncates.
    pub(super) fn run(&self, line: &str, out: &mut Vec<Value>) -> Result<(), DecodeError> {
        let input: Val = serde_json::from_str(line).map_err(DecodeError::NotJson)?;
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        for (i, result) in self.filter.id.run((ctx, input)).enumerate() {
            if i == MAX_JQ_OUTPUTS {
                return Err(DecodeError::TooManyResults {
                    limit: MAX_JQ_OUTPUTS,
                });
            }
            // Never `jaq_core::unwrap_valr`: it exits the process on `halt`.
            let value = result.map_err(|exn| match exn.get_err() {
                Ok(error) => DecodeError::Jq(error_text(error.into_val())),
                Err(exn) => match exn.get_halt() {
                    Ok(code) => DecodeError::Jq(format!("halt with exit code {code}")),
                    Err(_) => DecodeError::Jq("unexpected control flow".to_owned()),
                },
            })?;
            if !matches!(value, Val::Obj(_)) {
                return Err(DecodeError::ResultNotObject {
                    via: ExtractKind::Jq,
                    index: i + 1,
                    found: val_kind(&value),
                });
            }
            out.push(val_to_json(value));
        }
        Ok(())
    }
}

impl JqFilter {
    /// Runs the filter on `input` and returns every result, whatever its
    /// type (for enrichers' `extract`); at most [`MAX_JQ_OUTPUTS`].
    pub(crate) fn values(&self, input: &Value) -> Result<Vec<Value>, String> {
        let input =
            <Val as serde::Deserialize>::deserialize(input).map_err(|err| err.to_string())?;
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut values = Vec::new();
        for result in self.filter.id.run((ctx, input)) {
            if values.len() == MAX_JQ_OUTPUTS {
                return Err(format!("more than {MAX_JQ_OUTPUTS} results"));
            }
            let value = result.map_err(|exn| match exn.get_err() {
                Ok(error) => error_text(error.into_val()),
                Err(_) => "halt or unexpected control flow".to_owned(),
            })?;
            values.push(val_to_json(value));
        }
        Ok(values)
    }
}

/// The reasons in one module's load error.
fn load_error_reasons(code: &str, error: jaq_core::load::Error<&str>) -> Vec<String> {
    use jaq_core::load::Error;
    match error {
        Error::Io(errors) => errors
            .into_iter()
            .map(|(path, reason)| format!("cannot load module {path:?}: {reason}"))
            .collect(),
        Error::Lex(errors) => errors
            .into_iter()
            .map(|(expect, at)| {
                let expected = match expect {
                    // `as_str` panics on other delimiters (the lexer makes none)
                    lex::Expect::Delim(open) if !matches!(open, "(" | "[" | "{" | "\"") => {
                        format!("closing delimiter for `{open}`")
                    }
                    other => other.as_str().to_owned(),
                };
                // `at` is the rest of the input: show its first character
                let at = &at[..at.chars().next().map_or(0, char::len_utf8)];
                format!("expected {expected} {}", position(code, at))
            })
            .collect(),
        Error::Parse(errors) => errors
            .into_iter()
            .map(|(expect, found): parse::Error<&str>| {
                let expected = match expect {
                    parse::Expect::Just(token) => format!("`{token}`"),
                    parse::Expect::Nothing => "end of filter".to_owned(),
                    other => other.as_str().to_owned(),
                };
                format!("expected {expected} {}", position(code, found))
            })
            .collect(),
    }
}

/// `at end of input`, or `at column N (found `...`)` for a token `at` that is
/// a slice of `code`.
fn position(code: &str, at: &str) -> String {
    let offset = (at.as_ptr() as usize).wrapping_sub(code.as_ptr() as usize);
    if at.is_empty() || offset >= code.len() {
        return "at end of input".to_owned();
    }
    let column = code[..offset].chars().count() + 1;
    let token: String = at.chars().take(20).collect();
    format!("at column {column} (found `{token}`)")
}

/// Joins reasons with `; `.
fn join(reasons: impl Iterator<Item = String>) -> String {
    let reasons: Vec<String> = reasons.collect();
    if reasons.is_empty() {
        "invalid filter".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// A jq error value as text: strings as they are, other values as JSON.
fn error_text(value: Val) -> String {
    match value {
        Val::TStr(bytes) | Val::BStr(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        other => other.to_string(),
    }
}

/// `a string`, `an array`, ... for error messages.
fn val_kind(value: &Val) -> &'static str {
    match value {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Num(_) => "a number",
        Val::TStr(_) => "a string",
        Val::BStr(_) => "a byte string",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
    }
}

/// Converts a jaq value to JSON, moving out of it where it is not shared.
/// Byte strings and invalid UTF-8 become (lossy) strings, non-string object
/// keys their JSON text, and non-finite numbers `null`.
fn val_to_json(value: Val) -> Value {
    match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(b),
        Val::Num(n) => num_to_json(&n),
        Val::TStr(bytes) | Val::BStr(bytes) => Value::String(bytes_to_string(Vec::from(*bytes))),
        Val::Arr(items) => Value::Array(match Rc::try_unwrap(items) {
            Ok(items) => items.into_iter().map(val_to_json).collect(),
            Err(items) => items.iter().cloned().map(val_to_json).collect(),
        }),
        Val::Obj(map) => {
            let entries = |(k, v)| (key_to_string(k), val_to_json(v));
            Value::Object(match Rc::try_unwrap(map) {
                Ok(map) => map.into_iter().map(entries).collect::<Map<_, _>>(),
                Err(map) => map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .map(entries)
                    .collect(),
            })
        }
    }
}

fn key_to_string(key: Val) -> String {
    match key {
        Val::TStr(bytes) | Val::BStr(bytes) => bytes_to_string(Vec::from(*bytes)),
        other => other.to_string(),
    }
}

fn bytes_to_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::Number(Number::from(*i as i64)),
        Num::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        // big integers and decimal literals: serde_json reads their text,
        // falling back to a float for what it can't hold exactly
        other => {
            let text = other.to_string();
            text.parse::<Number>()
                .ok()
                .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64))
                .map_or(Value::Null, Value::Number)
        }
    }
}

/// A compiled JSONPath query.
pub(crate) struct JsonPathQuery {
    path: JsonPath,
}

impl JsonPathQuery {
    /// Parses an RFC 9535 query. The error is a one-line reason.
    pub(crate) fn compile(query: &str) -> Result<JsonPathQuery, String> {
        JsonPath::parse(query)
            .map(|path| JsonPathQuery { path })
            .map_err(|error| error.to_string())
    }

    /// Every node the query selects in `doc`, whatever its type.
    pub(crate) fn values(&self, doc: &Value) -> Vec<Value> {
        self.path.query(doc).all().into_iter().cloned().collect()
    }

    /// Appends every node the query selects in `doc` to `out`; each must be
    /// an object. The nodes are moved out of `doc` rather than cloned unless
    /// one contains another (or the same node is selected twice).
    pub(super) fn run(&self, mut doc: Value, out: &mut Vec<Value>) -> Result<(), DecodeError> {
        let nodes = self.path.query_located(&doc);
        if let Some((i, node)) = nodes
            .iter()
            .enumerate()
            .find(|(_, n)| !n.node().is_object())
        {
            return Err(DecodeError::ResultNotObject {
                via: ExtractKind::JsonPath,
                index: i + 1,
                found: json_kind(node.node()),
            });
        }
        let pointers: Vec<String> = nodes.locations().map(|l| l.to_json_pointer()).collect();
        if !disjoint(&pointers) {
            out.extend(nodes.nodes().cloned());
            return Ok(());
        }
        drop(nodes);
        if pointers.len() == 1 && pointers[0].is_empty() {
            out.push(doc);
            return Ok(());
        }
        for pointer in &pointers {
            let node = doc.pointer_mut(pointer).map(Value::take);
            // the query just found it there
            debug_assert!(node.is_some(), "{pointer}");
            out.extend(node);
        }
        Ok(())
    }
}

/// Whether no JSON pointer in `pointers` equals or is an ancestor of another.
fn disjoint(pointers: &[String]) -> bool {
    if pointers.len() < 2 {
        return true;
    }
    let mut seen = HashSet::with_capacity(pointers.len());
    if !pointers.iter().all(|p| seen.insert(p.as_str())) {
        return false;
    }
    // '/' only appears between reference tokens (`~1` escapes it in keys),
    // so every ancestor is a prefix ending just before a '/'
    !pointers
        .iter()
        .any(|p| p.match_indices('/').any(|(at, _)| seen.contains(&p[..at])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jq(code: &str, line: &str) -> Result<Vec<Value>, DecodeError> {
        let filter = JqFilter::compile(code).unwrap();
        let mut out = Vec::new();
        filter.run(line, &mut out).map(|()| out)
    }

    fn jsonpath(query: &str, doc: Value) -> Result<Vec<Value>, DecodeError> {
        let query = JsonPathQuery::compile(query).unwrap();
        let mut out = Vec::new();
        query.run(doc, &mut out).map(|()| out)
    }

    #[test]
    fn jq_values_convert_to_json() {
        let out = jq(
            r#"{i: 1, neg: -7, f: 1.5, big: 18446744073709551615, s: "é", b: true, n: null, a: [1, [2]], o: {x: "y"}, d: (1 / 0 | not)}"#,
            "null",
        )
        .unwrap();
        assert_eq!(
            out,
            vec![json!({
                "i": 1, "neg": -7, "f": 1.5, "big": 18446744073709551615u64, "s": "é",
                "b": true, "n": null, "a": [1, [2]], "o": {"x": "y"}, "d": false
            })]
        );
    }

    #[test]
    fn jq_input_numbers_round_trip() {
        let line =
            r#"{"u": 18446744073709551615, "i": -9223372036854775808, "f": 0.25, "e": 1e300}"#;
        assert_eq!(
            jq(".", line).unwrap(),
            vec![serde_json::from_str::<Value>(line).unwrap()]
        );
    }

    #[test]
    fn jq_shared_values_are_copied() {
        // `.a` is both emitted and kept inside the second result
        let out = jq("(.a, {b: .a})", r#"{"a": {"x": [1]}}"#).unwrap();
        assert_eq!(out, vec![json!({"x": [1]}), json!({"b": {"x": [1]}})]);
    }

    #[test]
    fn jq_errors() {
        let err = jq(r#"error("boom")"#, "{}").unwrap_err();
        assert_eq!(err.to_string(), "jq: boom");
        let err = jq(r#"error({code: 1})"#, "{}").unwrap_err();
        assert_eq!(err.to_string(), r#"jq: {"code":1}"#);
        let err = jq(".a[]", r#"{"a": 1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "jq: cannot use 1 as iterable (array or object)"
        );
        let err = jq("halt", "{}").unwrap_err();
        assert_eq!(err.to_string(), "jq: halt with exit code 0");
        let err = jq("halt_error", r#"{"a":1}"#).unwrap_err();
        assert!(err.to_string().starts_with("jq: halt"), "{err}");
        let err = jq(".", "{").unwrap_err();
        assert!(err.to_string().starts_with("not JSON: "), "{err}");
    }

    #[test]
    fn jq_empty_and_limit() {
        assert_eq!(jq("empty", "{}").unwrap(), Vec::<Value>::new());
        assert_eq!(jq(".missing[]?", "{}").unwrap(), Vec::<Value>::new());
        let err = jq("repeat(.)", "{}").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("jq: more than {MAX_JQ_OUTPUTS} results")
        );
        assert_eq!(err.kind(), "jq_results");
    }

    #[test]
    fn jq_compile_errors() {
        let err = JqFilter::compile(".a |").err().unwrap();
        assert_eq!(err, "expected term at end of input");
        let err = JqFilter::compile(".a | .b 1").err().unwrap();
        assert_eq!(err, "expected end of filter at column 9 (found `1`)");
        let err = JqFilter::compile("{a:}").err().unwrap();
        assert_eq!(err, "expected term at column 4 (found `}`)");
        let err = JqFilter::compile("def f: 1").err().unwrap();
        assert_eq!(err, "expected `;` at end of input");
        let err = JqFilter::compile("nosuchfilter(1)").err().unwrap();
        assert_eq!(err, "undefined filter `nosuchfilter/1`");
        let err = JqFilter::compile("$nope").err().unwrap();
        assert_eq!(err, "undefined variable `$nope`");
        let err = JqFilter::compile("if . then 1").err().unwrap();
        assert_eq!(err, "expected else or end at end of input");
        let err = JqFilter::compile("é ]").err().unwrap();
        assert_eq!(err, "expected token at column 1 (found `é`)");
        let err = JqFilter::compile("(.a").err().unwrap();
        assert_eq!(err, "expected closing parenthesis at end of input");
        let err = JqFilter::compile(r#""abc"#).err().unwrap();
        assert_eq!(err, "expected closing quote at end of input");
        let err = JqFilter::compile(".a ] .b").err().unwrap();
        assert_eq!(err, "expected token at column 4 (found `]`)");
        let err = JqFilter::compile(r#"import "x" as x; ."#).err().unwrap();
        assert!(err.starts_with("cannot load module"), "{err}");
    }

    #[test]
    fn jsonpath_moves_or_clones() {
        let doc = json!({"records": [{"a": 1}, {"b": 2}], "event": {"c": 3}});
        assert_eq!(
            jsonpath("$.records[*]", doc.clone()).unwrap(),
            vec![json!({"a": 1}), json!({"b": 2})]
        );
        assert_eq!(
            jsonpath("$.event", doc.clone()).unwrap(),
            vec![json!({"c": 3})]
        );
        assert_eq!(jsonpath("$", doc.clone()).unwrap(), vec![doc.clone()]);
        assert_eq!(
            jsonpath("$.nothing", doc.clone()).unwrap(),
            Vec::<Value>::new()
        );
        // the same node twice
        assert_eq!(
            jsonpath("$['event','event']", doc.clone()).unwrap(),
            vec![json!({"c": 3}), json!({"c": 3})]
        );
        // nested nodes: the root and the event
        let nested = json!({"e": {"x": {"y": 1}}});
        assert_eq!(
            jsonpath("$..[?@.y || @.x]", nested.clone()).unwrap(),
            vec![json!({"x": {"y": 1}}), json!({"y": 1})]
        );
        let err = jsonpath("$.records[*].a", doc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "jsonpath: result 1 is a number, not a JSON object"
        );
    }

    #[test]
    fn jsonpath_keys_needing_escapes() {
        let doc = json!({"a/b": {"x": 1}, "a~c": {"y": 2}, "a": {"b": {"z": 3}}});
        assert_eq!(
            jsonpath("$['a/b','a~c']", doc.clone()).unwrap(),
            vec![json!({"x": 1}), json!({"y": 2})]
        );
        assert_eq!(
            jsonpath("$['a/b', 'a']", doc).unwrap(),
            vec![json!({"x": 1}), json!({"b": {"z": 3}})]
        );
    }

    #[test]
    fn disjoint_pointers() {
        let ptrs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(disjoint(&ptrs(&["/a", "/b"])));
        assert!(disjoint(&ptrs(&["/a", "/a!", "/ab/c"])));
        assert!(!disjoint(&ptrs(&["/a", "/a!", "/a/b"])));
        assert!(!disjoint(&ptrs(&["", "/a"])));
        assert!(!disjoint(&ptrs(&["/a", "/a"])));
        assert!(disjoint(&ptrs(&["/a~1b", "/a"])));
    }

    #[test]
    fn jsonpath_compile_error() {
        let err = JsonPathQuery::compile("$.records[").err().unwrap();
        assert!(err.starts_with("at position "), "{err}");
        assert!(JsonPathQuery::compile("records").is_err());
    }
}
