//! `include: ${source.ID}` items in pipelines: transformations held by a
//! dynamic source, spliced into the pipeline's `transformations` where the
//! item stands.
//!
//! A source fetched over the network (`http`, `nats`) may only be included with
//! `--allow-remote-include`: whoever controls it controls how every rule is
//! rewritten. A pipeline without `include` items is loaded as it is.

use std::path::Path;

use rsigma_engine::pipeline::{Pipeline, PipelineSet};
use serde_json::Value;

use super::Sources;

/// Loads the pipelines of `specs` (builtin names or files), expanding their
/// `include` items from `sources`.
pub(crate) fn load_pipelines(
    specs: &[String],
    sources: Option<&Sources>,
    allow_remote: bool,
) -> Result<PipelineSet, String> {
    let mut pipelines = Vec::with_capacity(specs.len());
    for spec in specs {
        let path = Path::new(spec);
        let text = match Pipeline::builtin(spec) {
            Some(builtin) => {
                pipelines.push(builtin);
                continue;
            }
            None => std::fs::read_to_string(path),
        };
        let pipeline = match text {
            Ok(text) => {
                let expanded = if text.contains("include") {
                    expand(&text, sources, allow_remote)
                        .map_err(|reason| format!("pipeline {}: {reason}", path.display()))?
                } else {
                    None
                };
                Pipeline::from_yaml(expanded.as_deref().unwrap_or(&text), path)
            }
            // The engine's loader words the error (missing file, builtins).
            Err(_) => Pipeline::load(spec),
        };
        pipelines.push(pipeline.map_err(|err| err.to_string())?);
    }
    Ok(PipelineSet::new(pipelines))
}

/// The pipeline text with its `include` items replaced, or `None` when it
/// has none (or does not parse: the engine's parser reports that).
fn expand(
    text: &str,
    sources: Option<&Sources>,
    allow_remote: bool,
) -> Result<Option<String>, String> {
    let Ok(mut doc) = yaml_serde::from_str::<Value>(text) else {
        return Ok(None);
    };
    let Some(items) = doc.get_mut("transformations").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    if !items.iter().any(|item| item.get("include").is_some()) {
        return Ok(None);
    }
    let mut expanded = Vec::with_capacity(items.len());
    for (n, item) in items.drain(..).enumerate() {
        let Some(reference) = item.get("include") else {
            expanded.push(item);
            continue;
        };
        let at = format!("transformations[{n}]");
        if item.as_object().is_some_and(|o| o.len() > 1) {
            return Err(format!("{at}: an include item holds only `include`"));
        }
        let id = reference
            .as_str()
            .and_then(|r| r.strip_prefix("${source."))
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| format!("{at}: include takes a ${{source.ID}} reference"))?;
        let sources = sources
            .ok_or_else(|| format!("{at}: include: no source {id:?} is declared (--source)"))?;
        if sources.is_remote(id) && !allow_remote {
            return Err(format!(
                "{at}: source {id:?} is fetched over the network; including it needs --allow-remote-include"
            ));
        }
        let value = sources
            .value(id)
            .ok_or_else(|| format!("{at}: include: no source {id:?} is declared (--source)"))?;
        match &*value {
            Value::Array(included) if included.iter().all(Value::is_object) => {
                expanded.extend(included.iter().cloned());
            }
            Value::Object(_) => expanded.push((*value).clone()),
            _ => {
                return Err(format!(
                    "{at}: source {id:?} must hold a transformation or a list of them"
                ));
            }
        }
    }
    *items = expanded;
    yaml_serde::to_string(&doc)
        .map(Some)
        .map_err(|err| format!("cannot write the expanded pipeline: {err}"))
}
