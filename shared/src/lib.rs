#![doc = include_str!("../README.md")]

pub mod error;
pub mod json;
pub mod metrics;
pub mod server_errors;

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
