//! A Sigma detection engine.
//!
//! Rules are read from YAML ([`load_rules`]), compiled once into an
//! [`Engine`] and evaluated against JSON events many times. The crate has no
//! async runtime or network dependency; the daemon, the CLI and the operator
//! all share it.
//!
//! ```
//! use rsigma_engine::{Engine, parse_rules};
//! use std::path::Path;
//!
//! let yaml = r#"
//! title: Whoami
//! logsource: {category: process_creation, product: windows}
//! detection:
//!   selection:
//!     Image|endswith: '\whoami.exe'
//!   condition: selection
//! "#;
//! let loaded = parse_rules(yaml, Path::new("whoami.yml"));
//! assert!(loaded.errors.is_empty());
//! let (engine, errors) = Engine::compile(&loaded.rule_set);
//! assert!(errors.is_empty());
//! let event = serde_json::json!({"Image": r"C:\Windows\System32\WHOAMI.EXE"});
//! assert_eq!(engine.evaluate(&event)[0].rule_title, "Whoami");
//! ```

pub mod compile;
pub mod condition;
pub mod correlation;
pub mod error;
pub mod eval;
pub mod event;
mod index;
pub mod matcher;
pub mod parser;
pub mod pattern;
pub mod pipeline;
pub mod placeholder;
mod routes;
pub mod routing;
pub mod rule;
pub mod state;
pub mod timestamp;

pub use compile::{Placeholders, RuleInfo, UndefinedPlaceholders};
pub use correlation::{CorrelationEngine, CorrelationMatch, CorrelationOptions};
pub use error::RuleError;
pub use eval::{
    CompileOptions, Detection, DetectionRecord, Engine, MatchedField, RouteStats, Scratch,
};
pub use index::PrefilterOptions;
pub use parser::{LoadedRules, RuleSet, RulesDigest, load_rules, parse_rules};
pub use pipeline::{Pipeline, PipelineError, PipelineSet};
pub use routing::Routing;
