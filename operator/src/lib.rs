//! The rsigma Kubernetes operator.
//!
//! It reconciles each `DetectionEngine` into a rules ConfigMap (the valid
//! `SigmaRuleSet`s it selects), a Deployment of `rsigma engine daemon`, a
//! Service and a ServiceAccount, and gets rule changes into the running pods
//! by hot reload, confirmed per pod through the daemon's rules hash. Each
//! `SigmaRuleSet` is validated with the real engine and reports its errors,
//! counts, content hash and, per engine, whether it is loaded.
//!
//! Modules: [`resources`] (pure: desired objects), [`validate`] (the engine's
//! verdict), [`reload`] (daemon API), [`status`] (conditions, status writes),
//! [`controller`] (running the controllers, shared helpers), [`engine`] and
//! [`rule_set`] (the two reconcilers), [`leader`] (leader election), [`http`]
//! (`/healthz`, `/readyz`, `/metrics`). See docs/operator-controller.md.

pub mod controller;
pub mod engine;
pub mod enrichment;
pub mod http;
pub mod leader;
pub mod nats;
pub mod reload;
pub mod resources;
pub mod rule_set;
pub mod status;
pub mod validate;

pub use controller::{OperatorConfig, run};
