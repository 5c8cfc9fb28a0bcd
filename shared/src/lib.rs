//! flash-sale's domain: configuration, the stock transactions, payments, and the ports through
//! which side effects leave the process. Nothing here depends on Lambda except [`http`].

#[cfg(any(
    feature = "aws-scheduler",
    feature = "aws-sqs",
    feature = "aws-eventbridge",
    feature = "aws-secrets"
))]
pub mod adapters;
#[cfg(any(
    feature = "aws-scheduler",
    feature = "aws-sqs",
    feature = "aws-eventbridge",
    feature = "aws-secrets"
))]
pub mod aws;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod ids;
pub mod inbox;
pub mod json;
pub mod lambda;
pub mod metrics;
pub mod model;
pub mod money;
pub mod payments;
pub mod ports;
pub mod reconcile;
pub mod routes;
pub mod service;
pub mod stock;

pub use config::Config;
pub use error::Error;
