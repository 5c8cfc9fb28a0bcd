//! flash-sale's domain and its transactions, read bottom-up; every import points down a layer:
//!
//! - [`error`], [`json`], [`metrics`]: leaves every layer may use;
//! - [`domain`]: ids, money, models, deadlines, events, the pure payment rule (no I/O);
//! - [`config`]: every environment variable, by section;
//! - [`store`]: the transactions, one file per job, and the database ([`store::db`]);
//! - [`ports`]: the traits side effects leave the process through;
//! - [`service`]: orchestration, the transaction first and then its side effects;
//! - [`adapters`]: the ports' in-process and AWS implementations;
//! - [`http`], [`lambda`], [`routes`]: the Lambda and HTTP edge.

pub mod error;
pub mod json;
pub mod metrics;

pub mod domain;

pub mod config;

pub mod store;

pub mod ports;

pub mod service;

pub mod adapters;

pub mod http;
pub mod lambda;
pub mod routes;

pub use config::Config;
pub use error::Error;
