//! Reading pipeline YAML into the pipeline model.
//!
//! The document is deserialized straight from the text with hand-written
//! visitors, so that every error is raised while the YAML node it concerns
//! is being read: `yaml_serde` then attaches that node's line to it (a
//! parameter of a transformation is reported at the line of its
//! transformation, a bad condition at the line of the condition, an
//! unknown key or a value of the wrong type at its own line).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use yaml_serde::Value;

use crate::condition::{self, Condition};
use crate::rule::{DetectionItem, LogSource, Modifier, SigmaValue};

use super::ProcessingItem;
use super::conditions::{
    AttributeTest, CondSet, DetectionItemCondition, Expr, FieldMatch, FieldNameCondition, Linking,
    Op, RuleCondition, StateTest, StateValue,
};
use super::transform::{
    AddCondition, CaseMethod, PlaceholderFilter, ReplaceString, TargetType, Transformation,
    python_replacement,
};

/// A parsed pipeline document.
#[derive(Debug, Default)]
pub(crate) struct Document {
    pub(crate) name: Option<String>,
    pub(crate) priority: i64,
    pub(crate) vars: BTreeMap<String, Vec<String>>,
    pub(crate) items: Vec<ProcessingItem>,
}

/// Parses a pipeline; an error is its 1-based line (when known) and message.
pub(crate) fn parse_document(text: &str) -> Result<Document, (Option<usize>, String)> {
    match yaml_serde::from_str::<Value>(text) {
        Err(err) => return Err(split_error(&err)),
        Ok(Value::Null) => return Err((None, "empty pipeline document".into())),
        Ok(_) => {}
    }
    yaml_serde::from_str::<Document>(text).map_err(|err| split_error(&err))
}

/// The line of a `yaml_serde` error and its message without the location.
fn split_error(err: &yaml_serde::Error) -> (Option<usize>, String) {
    let mut message = err.to_string();
    let Some(location) = err.location() else {
        return (None, message);
    };
    let at = format!(" at line {} column {}", location.line(), location.column());
    message = message.replacen(&at, "", 1);
    (Some(location.line()), message)
}

/// Any scalar as text (`null` is not a scalar here).
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DocumentKey {
    Name,
    Priority,
    Vars,
    Transformations,
    Postprocessing,
    Finalizers,
    AllowedBackends,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a processing pipeline (a mapping with 'transformations')")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
                let mut doc = Document::default();
                while let Some(key) = map.next_key::<DocumentKey>()? {
                    match key {
                        DocumentKey::Name => {
                            doc.name = map.next_value::<Option<ScalarText>>()?.map(|s| s.0);
                        }
                        DocumentKey::Priority => {
                            doc.priority = map.next_value::<Option<i64>>()?.unwrap_or(0);
                        }
                        DocumentKey::Vars => {
                            doc.vars = map.next_value::<Option<Vars>>()?.unwrap_or_default().0;
                        }
                        DocumentKey::Transformations => {
                            doc.items = map
                                .next_value::<Option<Vec<ItemDef>>>()?
                                .unwrap_or_default()
                                .into_iter()
                                .map(|item| item.0)
                                .collect();
                        }
                        // Query post-processing and finalizers shape a
                        // backend's query text; they do not affect matching.
                        DocumentKey::Postprocessing
                        | DocumentKey::Finalizers
                        | DocumentKey::AllowedBackends => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(doc)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// `vars`: name to a scalar or a list of scalars.
#[derive(Default)]
struct Vars(BTreeMap<String, Vec<String>>);

impl<'de> Deserialize<'de> for Vars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vars;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of variable names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vars, A::Error> {
                let mut vars = BTreeMap::new();
                while let Some(name) = map.next_key::<ScalarText>()? {
                    let values = map.next_value::<VarValues>()?;
                    vars.insert(name.0, values.0);
                }
                Ok(Vars(vars))
            }
        }
        deserializer.deserialize_map(V)
    }
}

struct VarValues(Vec<String>);

impl<'de> Deserialize<'de> for VarValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VarValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a variable value: a string, a number or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<VarValues, E> {
                Ok(VarValues(vec![v.to_owned()]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<VarValues, E> {
                Ok(VarValues(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<VarValues, E> {
                Ok(VarValues(vec![v.to_string()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<VarValues, E> {
                Ok(VarValues(vec![v.to_string()]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<VarValues, E> {
                Ok(VarValues(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VarValues, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<ScalarText>()? {
                    values.push(value.0);
                }
                Ok(VarValues(values))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `*_cond_op`: `and` or `or`.
struct LinkOp(Linking);

impl<'de> Deserialize<'de> for LinkOp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LinkOp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("'and' or 'or'")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LinkOp, E> {
                match v {
                    "and" => Ok(LinkOp(Linking::All)),
                    "or" => Ok(LinkOp(Linking::Any)),
                    other => Err(E::custom(format!(
                        "invalid condition linking '{other}' (expected 'and' or 'or')"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Building a condition of one kind from its type and parameters.
trait ConditionKind: Sized {
    /// How the kind is named in messages.
    const WHAT: &'static str;
    fn build(type_name: &str, params: &mut Params) -> Result<Self, String>;
}

/// The conditions of one kind as written: a list, or a mapping from names
/// (for `*_cond_expr`).
struct ConditionList<C> {
    conditions: Vec<C>,
    names: Option<Vec<String>>,
}

impl<C> Default for ConditionList<C> {
    fn default() -> Self {
        ConditionList {
            conditions: Vec::new(),
            names: None,
        }
    }
}

impl<'de, C: ConditionKind> Deserialize<'de> for ConditionList<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<C>(PhantomData<C>);
        impl<'de, C: ConditionKind> Visitor<'de> for V<C> {
            type Value = ConditionList<C>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of {}s or a mapping of names to them", C::WHAT)
            }
            fn visit_unit<E: de::Error>(self) -> Result<ConditionList<C>, E> {
                Ok(ConditionList::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ConditionList<C>, A::Error> {
                let mut conditions = Vec::new();
                while let Some(condition) = seq.next_element::<ConditionDef<C>>()? {
                    conditions.push(condition.0);
                }
                Ok(ConditionList {
                    conditions,
                    names: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ConditionList<C>, A::Error> {
                let mut conditions = Vec::new();
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<ScalarText>()? {
                    conditions.push(map.next_value::<ConditionDef<C>>()?.0);
                    names.push(name.0);
                }
                Ok(ConditionList {
                    conditions,
                    names: Some(names),
                })
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// One condition mapping (`type` and parameters).
struct ConditionDef<C>(C);

impl<'de, C: ConditionKind> Deserialize<'de> for ConditionDef<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<C>(PhantomData<C>);
        impl<'de, C: ConditionKind> Visitor<'de> for V<C> {
            type Value = ConditionDef<C>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a {} (a mapping with 'type')", C::WHAT)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ConditionDef<C>, A::Error> {
                let (type_name, mut params) = read_typed_mapping(map, C::WHAT)?;
                let build = || -> Result<C, String> {
                    let condition = C::build(&type_name, &mut params)?;
                    params.finish()?;
                    Ok(condition)
                };
                build().map(ConditionDef).map_err(A::Error::custom)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

/// Reads a mapping with a `type` key; the other entries become parameters.
fn read_typed_mapping<'de, A: MapAccess<'de>>(
    mut map: A,
    what: &'static str,
) -> Result<(String, Params), A::Error> {
    let mut type_name = None;
    let mut entries = Vec::new();
    while let Some(key) = map.next_key::<ScalarText>()? {
        if key.0 == "type" {
            type_name = Some(map.next_value::<String>()?);
        } else {
            entries.push((key.0, map.next_value::<Value>()?));
        }
    }
    let type_name = type_name.ok_or_else(|| A::Error::custom(format!("{what}: missing 'type'")))?;
    let params = Params {
        context: format!("{what} '{type_name}'"),
        entries,
    };
    Ok((type_name, params))
}

/// The parameters of a transformation or condition, taken one by one;
/// whatever is left over is an unknown parameter.
struct Params {
    context: String,
    entries: Vec<(String, Value)>,
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Tagged(tagged) => scalar_text(&tagged.value),
        _ => None,
    }
}

fn sigma_value(value: &Value) -> Option<SigmaValue> {
    Some(match value {
        Value::Null => SigmaValue::Null,
        Value::Bool(b) => SigmaValue::Bool(*b),
        Value::String(s) => SigmaValue::String(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SigmaValue::Integer(i),
            None => SigmaValue::Float(n.as_f64()?),
        },
        Value::Tagged(tagged) => sigma_value(&tagged.value)?,
        Value::Sequence(_) | Value::Mapping(_) => return None,
    })
}

impl Params {
    fn take(&mut self, key: &str) -> Option<Value> {
        let position = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(position).1)
    }

    fn error(&self, message: impl fmt::Display) -> String {
        format!("{}: {message}", self.context)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => scalar_text(&value)
                .map(Some)
                .ok_or_else(|| self.error(format!("'{key}' must be a string"))),
        }
    }

    fn required_string(&mut self, key: &str) -> Result<String, String> {
        self.string(key)?
            .ok_or_else(|| self.error(format!("missing required parameter '{key}'")))
    }

    fn boolean(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(self.error(format!("'{key}' must be true or false"))),
        }
    }

    /// A string or a list of strings.
    fn string_list(&mut self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| {
                    scalar_text(item)
                        .ok_or_else(|| self.error(format!("'{key}' must list strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(value) => scalar_text(&value).map(|s| Some(vec![s])).ok_or_else(|| {
                self.error(format!("'{key}' must be a string or a list of strings"))
            }),
        }
    }

    /// A mapping of strings to a string or a list of strings, in order.
    fn string_map(&mut self, key: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        let value = self
            .take(key)
            .ok_or_else(|| self.error(format!("missing required parameter '{key}'")))?;
        let Value::Mapping(mapping) = value else {
            return Err(self.error(format!("'{key}' must be a mapping")));
        };
        let mut out = Vec::with_capacity(mapping.len());
        for (source, target) in &mapping {
            let source = scalar_text(source)
                .ok_or_else(|| self.error(format!("'{key}': keys must be strings")))?;
            let targets = match target {
                Value::Sequence(items) => items
                    .iter()
                    .map(scalar_text)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        self.error(format!("'{key}': '{source}' must map to strings"))
                    })?,
                other => vec![scalar_text(other).ok_or_else(|| {
                    self.error(format!(
                        "'{key}': '{source}' must map to a string or a list of strings"
                    ))
                })?],
            };
            out.push((source, targets));
        }
        Ok(out)
    }

    fn value(&mut self, key: &str) -> Result<SigmaValue, String> {
        let value = self
            .take(key)
            .ok_or_else(|| self.error(format!("missing required parameter '{key}'")))?;
        sigma_value(&value)
            .ok_or_else(|| self.error(format!("'{key}' must be a string, number, boolean or null")))
    }

    fn state_value(&mut self, key: &str) -> Result<StateValue, String> {
        match self.value(key)? {
            SigmaValue::String(s) => Ok(StateValue::Str(s)),
            SigmaValue::Integer(i) => Ok(StateValue::Int(i)),
            SigmaValue::Float(f) => Ok(StateValue::Float(f)),
            SigmaValue::Bool(b) => Ok(StateValue::Bool(b)),
            SigmaValue::Null => Err(self.error(format!("'{key}' must not be null"))),
        }
    }

    fn op(&mut self, lists: bool) -> Result<Op, String> {
        match self.string("op")? {
            None => Ok(Op::Eq),
            Some(op) => Op::parse(&op, lists).map_err(|err| self.error(err)),
        }
    }

    /// `cond: any | all` of value conditions (required, as in pySigma).
    fn all(&mut self) -> Result<bool, String> {
        match self.string("cond")?.as_deref() {
            Some("any") => Ok(false),
            Some("all") => Ok(true),
            Some(other) => Err(self.error(format!(
                "invalid 'cond' value '{other}' (expected 'any' or 'all')"
            ))),
            None => Err(self.error("missing required parameter 'cond' (any or all)")),
        }
    }

    fn regex(&mut self, key: &str, anchored: bool) -> Result<Regex, String> {
        let pattern = self.required_string(key)?;
        compile_regex(&pattern, anchored).map_err(|err| self.error(err))
    }

    fn state_test(&mut self) -> Result<StateTest, String> {
        Ok(StateTest {
            key: self.required_string("key")?,
            val: self.state_value("val")?,
            op: self.op(false)?,
        })
    }

    fn finish(self) -> Result<(), String> {
        match self.entries.first() {
            None => Ok(()),
            Some((key, _)) => Err(self.error(format!("unknown parameter '{key}'"))),
        }
    }
}

/// Compiles a regular expression; `anchored` anchors it at the start, as
/// Python's `re.match` is.
fn compile_regex(pattern: &str, anchored: bool) -> Result<Regex, String> {
    let source = if anchored {
        format!("^(?:{pattern})")
    } else {
        pattern.to_owned()
    };
    Regex::new(&source).map_err(|err| format!("invalid regular expression '{pattern}': {err}"))
}

impl ConditionKind for RuleCondition {
    const WHAT: &'static str = "rule condition";

    fn build(type_name: &str, p: &mut Params) -> Result<Self, String> {
        Ok(match type_name {
            "logsource" => RuleCondition::Logsource(LogSource {
                category: p.string("category")?,
                product: p.string("product")?,
                service: p.string("service")?,
                custom: Vec::new(),
            }),
            "contains_detection_item" => RuleCondition::ContainsDetectionItem {
                field: p.string("field")?,
                value: p.value("value")?,
            },
            "contains_field" => RuleCondition::ContainsField(p.string("field")?),
            "processing_item_applied" => {
                RuleCondition::ProcessingItemApplied(p.required_string("processing_item_id")?)
            }
            "processing_state" => RuleCondition::ProcessingState(p.state_test()?),
            "is_sigma_rule" => RuleCondition::IsSigmaRule,
            "is_sigma_correlation_rule" => RuleCondition::IsSigmaCorrelationRule,
            "rule_attribute" => {
                let attribute = p.required_string("attribute")?;
                let value = p.required_string("value")?;
                let op = p.op(true)?;
                RuleCondition::RuleAttribute(
                    AttributeTest::new(attribute, op, &value).map_err(|err| p.error(err))?,
                )
            }
            "tag" => RuleCondition::Tag(p.required_string("tag")?),
            other => {
                return Err(format!(
                    "unknown rule condition type '{other}' (expected logsource, \
                     contains_detection_item, contains_field, processing_item_applied, \
                     processing_state, is_sigma_rule, is_sigma_correlation_rule, \
                     rule_attribute or tag)"
                ));
            }
        })
    }
}

impl ConditionKind for DetectionItemCondition {
    const WHAT: &'static str = "detection item condition";

    fn build(type_name: &str, p: &mut Params) -> Result<Self, String> {
        Ok(match type_name {
            "match_string" => DetectionItemCondition::MatchString {
                regex: p.regex("pattern", true)?,
                negate: p.boolean("negate")?,
                all: p.all()?,
            },
            "match_value" => DetectionItemCondition::MatchValue {
                value: p.value("value")?,
                all: p.all()?,
            },
            "contains_wildcard" => DetectionItemCondition::ContainsWildcard { all: p.all()? },
            "is_null" => DetectionItemCondition::IsNull { all: p.all()? },
            "processing_item_applied" => DetectionItemCondition::ProcessingItemApplied(
                p.required_string("processing_item_id")?,
            ),
            "processing_state" => DetectionItemCondition::ProcessingState(p.state_test()?),
            other => {
                return Err(format!(
                    "unknown detection item condition type '{other}' (expected match_string, \
                     match_value, contains_wildcard, is_null, processing_item_applied or \
                     processing_state)"
                ));
            }
        })
    }
}

impl ConditionKind for FieldNameCondition {
    const WHAT: &'static str = "field name condition";

    fn build(type_name: &str, p: &mut Params) -> Result<Self, String> {
        Ok(match type_name {
            "include_fields" | "exclude_fields" => {
                let fields = p
                    .string_list("fields")?
                    .ok_or_else(|| p.error("missing required parameter 'fields'"))?;
                let mode = p.string("mode")?.unwrap_or_else(|| "plain".to_owned());
                let fields = match mode.as_str() {
                    "plain" => FieldMatch::Plain(fields),
                    "re" => FieldMatch::Re(
                        fields
                            .iter()
                            .map(|f| compile_regex(f, true))
                            .collect::<Result<_, _>>()
                            .map_err(|err| p.error(err))?,
                    ),
                    other => {
                        return Err(p.error(format!(
                            "invalid field name matching mode '{other}' (expected 'plain' or 're')"
                        )));
                    }
                };
                FieldNameCondition::Fields {
                    fields,
                    exclude: type_name == "exclude_fields",
                }
            }
            "processing_item_applied" => {
                FieldNameCondition::ProcessingItemApplied(p.required_string("processing_item_id")?)
            }
            "processing_state" => FieldNameCondition::ProcessingState(p.state_test()?),
            other => {
                return Err(format!(
                    "unknown field name condition type '{other}' (expected include_fields, \
                     exclude_fields, processing_item_applied or processing_state)"
                ));
            }
        })
    }
}

/// The conditions of one kind of an item as written, before linking.
struct RawConditions<C> {
    list: ConditionList<C>,
    op: Option<Linking>,
    negated: bool,
    expr: Option<String>,
}

impl<C> Default for RawConditions<C> {
    fn default() -> Self {
        RawConditions {
            list: ConditionList::default(),
            op: None,
            negated: false,
            expr: None,
        }
    }
}

impl<C> RawConditions<C> {
    fn build(self, what: &str, prefix: &str) -> Result<CondSet<C>, String> {
        let linking = match (self.expr, self.op) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "'{prefix}_cond_expr' and '{prefix}_cond_op' exclude each other"
                ));
            }
            (Some(expr), None) => {
                let Some(names) = &self.list.names else {
                    return Err(format!(
                        "'{prefix}_cond_expr' needs the {what}s as a mapping from names to conditions"
                    ));
                };
                let (expr, used) = Expr::parse(&expr, names)?;
                if used.len() < names.len() {
                    let unused: Vec<&str> = names
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !used.contains(i))
                        .map(|(_, n)| n.as_str())
                        .collect();
                    return Err(format!(
                        "{what}s not referenced by '{prefix}_cond_expr': {}",
                        unused.join(", ")
                    ));
                }
                Linking::Expr(expr)
            }
            (None, op) => op.unwrap_or(Linking::All),
        };
        Ok(CondSet {
            conds: self.list.conditions,
            linking,
            negated: self.negated,
        })
    }
}

/// A processing item (`transformations` entry).
struct ItemDef(ProcessingItem);

impl<'de> Deserialize<'de> for ItemDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ItemDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a processing item (a mapping with 'type')")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemDef, A::Error> {
                let mut id = None;
                let mut type_name = None;
                let mut entries = Vec::new();
                let mut rule = RawConditions::<RuleCondition>::default();
                let mut detection = RawConditions::<DetectionItemCondition>::default();
                let mut field = RawConditions::<FieldNameCondition>::default();
                while let Some(key) = map.next_key::<ScalarText>()? {
                    match key.0.as_str() {
                        "id" => id = map.next_value::<Option<ScalarText>>()?.map(|s| s.0),
                        "type" => type_name = Some(map.next_value::<String>()?),
                        "rule_conditions" => rule.list = map.next_value()?,
                        "rule_cond_op" => rule.op = Some(map.next_value::<LinkOp>()?.0),
                        "rule_cond_not" => rule.negated = map.next_value()?,
                        "rule_cond_expr" => rule.expr = Some(map.next_value()?),
                        "detection_item_conditions" => detection.list = map.next_value()?,
                        "detection_item_cond_op" => {
                            detection.op = Some(map.next_value::<LinkOp>()?.0);
                        }
                        "detection_item_cond_not" => detection.negated = map.next_value()?,
                        "detection_item_cond_expr" => detection.expr = Some(map.next_value()?),
                        "field_name_conditions" => field.list = map.next_value()?,
                        "field_name_cond_op" => field.op = Some(map.next_value::<LinkOp>()?.0),
                        "field_name_cond_not" => field.negated = map.next_value()?,
                        "field_name_cond_expr" => field.expr = Some(map.next_value()?),
                        _ => entries.push((key.0, map.next_value::<Value>()?)),
                    }
                }
                let build = || -> Result<ProcessingItem, String> {
                    let type_name = type_name.ok_or("transformation: missing 'type'")?;
                    let mut params = Params {
                        context: format!("transformation '{type_name}'"),
                        entries,
                    };
                    let transformation = build_transformation(&type_name, &mut params)?;
                    params.finish()?;
                    Ok(ProcessingItem {
                        id,
                        transformation,
                        rule_conditions: rule.build("rule condition", "rule")?,
                        detection_item_conditions: detection
                            .build("detection item condition", "detection_item")?,
                        field_name_conditions: field.build("field name condition", "field_name")?,
                    })
                };
                build().map(ItemDef).map_err(A::Error::custom)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Parses `field|modifier|...: value(s)` entries (of `add_condition`).
fn detection_items(p: &Params, value: &Value) -> Result<Vec<DetectionItem>, String> {
    let Value::Mapping(mapping) = value else {
        return Err(p.error("'conditions' must be a mapping of fields to values"));
    };
    if mapping.is_empty() {
        return Err(p.error("'conditions' must not be empty"));
    }
    mapping
        .iter()
        .map(|(key, value)| {
            let key =
                scalar_text(key).ok_or_else(|| p.error("'conditions' keys must be strings"))?;
            let mut parts = key.split('|');
            let field = parts.next().unwrap_or_default();
            let modifiers = parts
                .map(str::parse::<Modifier>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| p.error(format!("'{key}': {err}")))?;
            let bad = || p.error(format!("'{key}': values must be scalars"));
            let values = match value {
                Value::Sequence(items) => items
                    .iter()
                    .map(|item| sigma_value(item).ok_or_else(bad))
                    .collect::<Result<Vec<_>, _>>()?,
                scalar => vec![sigma_value(scalar).ok_or_else(bad)?],
            };
            Ok(DetectionItem {
                field: (!field.is_empty()).then(|| field.to_owned()),
                modifiers,
                values,
            })
        })
        .collect()
}

fn not_supported(type_name: &str, why: &str) -> String {
    format!("transformation '{type_name}' is not supported by rsigma: {why}")
}

fn build_transformation(type_name: &str, p: &mut Params) -> Result<Transformation, String> {
    Ok(match type_name {
        "field_name_mapping" => {
            Transformation::FieldNameMapping(p.string_map("mapping")?.into_iter().collect())
        }
        "field_name_prefix_mapping" => {
            Transformation::FieldNamePrefixMapping(p.string_map("mapping")?)
        }
        "field_name_prefix" => Transformation::FieldNamePrefix(p.required_string("prefix")?),
        "field_name_suffix" => Transformation::FieldNameSuffix(p.required_string("suffix")?),
        "drop_detection_item" => Transformation::DropDetectionItem,
        "add_condition" => {
            let conditions = p
                .take("conditions")
                .ok_or_else(|| p.error("missing required parameter 'conditions'"))?;
            let items = detection_items(p, &conditions)?;
            let name = p.string("name")?;
            if let Some(name) = &name
                && condition::parse(name) != Ok(Condition::Identifier(name.clone()))
            {
                return Err(p.error(format!("'{name}' cannot name a search identifier")));
            }
            Transformation::AddCondition(AddCondition {
                name,
                items,
                template: p.boolean("template")?,
                negated: p.boolean("negated")?,
            })
        }
        "change_logsource" => Transformation::ChangeLogsource(LogSource {
            category: p.string("category")?,
            product: p.string("product")?,
            service: p.string("service")?,
            custom: Vec::new(),
        }),
        "replace_string" => {
            let regex = p.regex("regex", false)?;
            let replacement = p.required_string("replacement")?;
            let replacement = python_replacement(&replacement).map_err(|err| p.error(err))?;
            Transformation::ReplaceString(ReplaceString {
                regex,
                replacement,
                skip_special: p.boolean("skip_special")?,
                interpret_special: p.boolean("interpret_special")?,
            })
        }
        "map_string" => {
            let mapping: HashMap<String, Vec<String>> =
                p.string_map("mapping")?.into_iter().collect();
            Transformation::MapString(mapping)
        }
        "set_value" => {
            let value = p.value("value")?;
            let value = match p.string("force_type")?.as_deref() {
                None => value,
                Some(force) => force_type(p, value, force)?,
            };
            Transformation::SetValue(value)
        }
        "convert_type" => {
            Transformation::ConvertType(match p.required_string("target_type")?.as_str() {
                "str" => TargetType::Str,
                "num" => TargetType::Num,
                other => {
                    return Err(p.error(format!(
                        "invalid target_type '{other}' (expected 'str' or 'num')"
                    )));
                }
            })
        }
        "value_placeholders" | "wildcard_placeholders" => {
            let filter = PlaceholderFilter {
                include: p.string_list("include")?,
                exclude: p.string_list("exclude")?,
            };
            if filter.include.is_some() && filter.exclude.is_some() {
                return Err(p.error("'include' and 'exclude' exclude each other"));
            }
            if type_name == "value_placeholders" {
                Transformation::ValuePlaceholders(filter)
            } else {
                Transformation::WildcardPlaceholders(filter)
            }
        }
        "set_state" => Transformation::SetState {
            key: p.required_string("key")?,
            val: p.state_value("val")?,
        },
        "rule_failure" => Transformation::RuleFailure(p.required_string("message")?),
        "detection_item_failure" => {
            Transformation::DetectionItemFailure(p.required_string("message")?)
        }
        "case" => Transformation::Case(match p.string("method")?.as_deref() {
            None | Some("lower") => CaseMethod::Lower,
            Some("upper") => CaseMethod::Upper,
            Some("snake_case") => CaseMethod::Snake,
            Some(other) => {
                return Err(p.error(format!(
                    "invalid method '{other}' (expected lower, upper or snake_case)"
                )));
            }
        }),
        "nest" => {
            let items = p
                .take("items")
                .ok_or_else(|| p.error("missing required parameter 'items'"))?;
            let items = yaml_serde::from_value::<Vec<ItemDef>>(items)
                .map_err(|err| p.error(format!("nested item: {err}")))?;
            Transformation::Nest(items.into_iter().map(|item| item.0).collect())
        }
        // These shape the field list a query backend outputs: no effect here.
        "add_field" | "remove_field" => {
            p.string_list("field")?
                .ok_or_else(|| p.error("missing required parameter 'field'"))?;
            Transformation::Ignored
        }
        "set_field" => {
            p.string_list("fields")?
                .ok_or_else(|| p.error("missing required parameter 'fields'"))?;
            Transformation::Ignored
        }
        "set_custom_attribute" => {
            p.required_string("attribute")?;
            p.take("value")
                .ok_or_else(|| p.error("missing required parameter 'value'"))?;
            Transformation::Ignored
        }
        "query_expression_placeholders" => {
            return Err(not_supported(type_name, "it produces backend query text"));
        }
        "field_name_transform" => {
            return Err(not_supported(type_name, "it needs a Python function"));
        }
        "hashes_fields" | "regex" | "strict_field_mapping_failure" => {
            return Err(not_supported(type_name, "not implemented"));
        }
        other => return Err(format!("unknown transformation type '{other}'")),
    })
}

fn force_type(p: &Params, value: SigmaValue, force: &str) -> Result<SigmaValue, String> {
    let text = match &value {
        SigmaValue::String(s) => s.clone(),
        SigmaValue::Integer(i) => i.to_string(),
        SigmaValue::Float(f) => f.to_string(),
        _ => {
            return Err(p.error("'force_type' is only allowed for string and numeric values"));
        }
    };
    match force {
        "str" => Ok(SigmaValue::String(text)),
        "num" => {
            if let Ok(i) = text.trim().parse::<i64>() {
                Ok(SigmaValue::Integer(i))
            } else if let Ok(f) = text.trim().parse::<f64>() {
                Ok(SigmaValue::Float(f))
            } else {
                Err(p.error(format!("value '{text}' can't be converted to number")))
            }
        }
        other => Err(p.error(format!(
            "invalid force_type '{other}' (expected 'str' or 'num')"
        ))),
    }
}
