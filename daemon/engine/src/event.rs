//! Field lookup in JSON events.
//!
//! A field name such as `process.command_line` is resolved against the event
//! by trying, at each object, the longest dotted key first: a flat key that
//! contains dots (`"process.command_line": ...`) wins over nested traversal
//! (`"process": {"command_line": ...}`). Arrays are transparent: a field
//! inside an array of objects yields one value per element, and an array value
//! yields its elements, so a matcher holds when any element matches.

use std::ops::ControlFlow;

use serde_json::Value;

/// A field name split once, at compile time, into its dotted segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    name: String,
    /// Byte ranges of the segments within `name`.
    segments: Vec<(usize, usize)>,
}

impl FieldPath {
    /// Splits `name` at its dots.
    pub fn new(name: &str) -> Self {
        let mut segments = Vec::new();
        let mut start = 0;
        for (i, c) in name.char_indices() {
            if c == '.' {
                segments.push((start, i));
                start = i + 1;
            }
        }
        segments.push((start, name.len()));
        FieldPath {
            name: name.to_owned(),
            segments,
        }
    }

    /// The field name as written in the rule.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key made of segments `from..to` joined by dots.
    fn key(&self, from: usize, to: usize) -> &str {
        &self.name[self.segments[from].0..self.segments[to - 1].1]
    }

    /// Calls `visit` with every value the path resolves to (arrays flattened),
    /// stopping early when it returns `Break`. Returns `Break` if it stopped.
    pub fn for_each_value<'e>(
        &self,
        event: &'e Value,
        visit: &mut impl FnMut(&'e Value) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.walk(event, 0, visit)
    }

    /// True when the path resolves to at least one value (null included).
    pub fn is_present(&self, event: &Value) -> bool {
        self.for_each_value(event, &mut |_| ControlFlow::Break(()))
            .is_break()
    }

    fn walk<'e>(
        &self,
        node: &'e Value,
        from: usize,
        visit: &mut impl FnMut(&'e Value) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if from == self.segments.len() {
            return visit_flattened(node, visit);
        }
        match node {
            Value::Object(map) => {
                for to in (from + 1..=self.segments.len()).rev() {
                    if let Some(child) = map.get(self.key(from, to)) {
                        return self.walk(child, to, visit);
                    }
                }
                ControlFlow::Continue(())
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, from, visit)?;
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

fn visit_flattened<'e>(
    node: &'e Value,
    visit: &mut impl FnMut(&'e Value) -> ControlFlow<()>,
) -> ControlFlow<()> {
    match node {
        Value::Array(items) => {
            for item in items {
                visit_flattened(item, visit)?;
            }
            ControlFlow::Continue(())
        }
        other => visit(other),
    }
}

/// Calls `visit` with every scalar leaf of the event (strings, numbers,
/// booleans; arrays and objects descended), for keyword searches.
pub fn for_each_leaf<'e>(
    node: &'e Value,
    visit: &mut impl FnMut(&'e Value) -> ControlFlow<()>,
) -> ControlFlow<()> {
    match node {
        Value::Object(map) => {
            for value in map.values() {
                for_each_leaf(value, visit)?;
            }
            ControlFlow::Continue(())
        }
        Value::Array(items) => {
            for item in items {
                for_each_leaf(item, visit)?;
            }
            ControlFlow::Continue(())
        }
        Value::Null => ControlFlow::Continue(()),
        scalar => visit(scalar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(path: &str, event: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        let _ = FieldPath::new(path).for_each_value(event, &mut |v| {
            out.push(v.clone());
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn flat_dotted_key_wins_over_nesting() {
        let event = json!({"a.b": "flat", "a": {"b": "nested"}});
        assert_eq!(values("a.b", &event), vec![json!("flat")]);
        let event = json!({"a": {"b": "nested"}});
        assert_eq!(values("a.b", &event), vec![json!("nested")]);
    }

    #[test]
    fn partially_flat_keys() {
        let event = json!({"process": {"parent.name": "cmd.exe"}});
        assert_eq!(
            values("process.parent.name", &event),
            vec![json!("cmd.exe")]
        );
        let event = json!({"a.b": {"c": 1}});
        assert_eq!(values("a.b.c", &event), vec![json!(1)]);
    }

    #[test]
    fn arrays_are_transparent() {
        let event = json!({"users": [{"name": "a"}, {"name": "b"}], "tags": [["x"], "y"]});
        assert_eq!(values("users.name", &event), vec![json!("a"), json!("b")]);
        assert_eq!(values("tags", &event), vec![json!("x"), json!("y")]);
    }

    #[test]
    fn missing_fields_yield_nothing() {
        let event = json!({"a": "x", "n": null});
        assert!(values("b", &event).is_empty());
        assert!(values("a.b", &event).is_empty());
        assert!(FieldPath::new("n").is_present(&event));
        assert!(!FieldPath::new("m").is_present(&event));
    }
}
