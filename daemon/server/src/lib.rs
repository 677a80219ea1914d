//! The rsigma detection daemon.

pub mod input;
