//! The `lookup` primitive: a value read from a dynamic source's cache
//! (`--source`), sliced by an `extract` expression rendered per record.
//!
//! Record values enter the expression only inside its string literals,
//! escaped ([`super::template::escape_in_string`]): a value cannot turn into
//! query code (jq's `env`, say). Compiled expressions are kept per rendered
//! text, at most [`COMPILED_ENTRIES`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::Extractor;
use super::config::{ExtractType, Kind};
use super::template::{Template, check_references_quoted, escape_in_string};
use crate::sources::Sources;

/// Most compiled expressions kept per enricher.
const COMPILED_ENTRIES: usize = 1024;

/// A compiled `lookup` enricher.
pub(crate) struct Lookup {
    source: String,
    extract: Option<(ExtractType, Template)>,
    default: Option<Value>,
    compiled: Mutex<HashMap<String, Arc<Extractor>>>,
}

impl Lookup {
    /// Checks the source id against the declared sources and the
    /// expression's references.
    pub(crate) fn new(
        source: String,
        extract: Option<(ExtractType, String)>,
        default: Option<Value>,
        kind: Kind,
        sources: Option<&Sources>,
    ) -> Result<Lookup, String> {
        match sources {
            None => {
                return Err(format!(
                    "`source: {source}`: type lookup reads dynamic sources, and no --source is given"
                ));
            }
            Some(sources) if !sources.is_declared(&source) => {
                return Err(format!("`source: {source}`: no such source is declared"));
            }
            Some(_) => {}
        }
        let extract = match extract {
            None => None,
            Some((extract_type, text)) => {
                let quotes: &[char] = match extract_type {
                    ExtractType::Jq => &['"'],
                    ExtractType::JsonPath => &['"', '\''],
                };
                check_references_quoted(&text, quotes)
                    .map_err(|err| format!("`extract`: {err}"))?;
                let template =
                    Template::parse(&text, kind).map_err(|err| format!("`extract`: {err}"))?;
                // An expression without references compiles now, so that a
                // syntax error is a load error.
                if let Ok(fixed) = template.render_plain(&Value::Null)
                    && !text.contains("${")
                {
                    Extractor::compile(extract_type, &fixed)?;
                }
                Some((extract_type, template))
            }
        };
        Ok(Lookup {
            source,
            extract,
            default,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// The value for `record`: the extracted value, else `default`, else
    /// none (the caller's `on_error`). An expression that fails to compile
    /// or run is an error even with a default.
    /// The expression runs on a blocking thread: a heavy one over a large
    /// source must not hold up the async runtime (the caller's timeout
    /// releases the record; the thread finishes on its own).
    pub(crate) async fn call(
        &self,
        record: &Value,
        sources: &Sources,
    ) -> Result<Option<Value>, String> {
        let data = sources
            .value(&self.source)
            .ok_or_else(|| format!("source {:?} has no value", self.source))?;
        let found = match &self.extract {
            None => Some((*data).clone()),
            Some((extract_type, template)) => {
                let text = template.render(record, escape_in_string)?;
                let extractor = self.extractor(*extract_type, &text)?;
                tokio::task::spawn_blocking(move || extractor.apply(&data))
                    .await
                    .map_err(|_| "the extract expression panicked".to_owned())??
            }
        };
        Ok(found
            .filter(|v| !v.is_null())
            .or_else(|| self.default.clone()))
    }

    fn extractor(&self, extract_type: ExtractType, text: &str) -> Result<Arc<Extractor>, String> {
        let mut compiled = self.compiled.lock().expect("not poisoned");
        if let Some(extractor) = compiled.get(text) {
            return Ok(Arc::clone(extractor));
        }
        let extractor = Arc::new(Extractor::compile(extract_type, text)?);
        if compiled.len() >= COMPILED_ENTRIES {
            compiled.clear();
        }
        compiled.insert(text.to_owned(), Arc::clone(&extractor));
        Ok(extractor)
    }
}
