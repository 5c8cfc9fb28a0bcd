//! flash-sale on one machine: every HTTP function mounted at its API path, calling the very
//! `handle` functions the Lambdas run, plus the in-process expiry timers, the sweeper and the
//! durable payment queue workers. Also the helpers the end-to-end tests share, and those the
//! benchmark shares with them (database names, the known secrets, the AWS emulator).

pub mod database;
pub mod known_secrets;
pub mod mariadb;
pub mod moto;
pub mod openapi;
pub mod server;
pub mod sqs_poller;
pub mod testing;

pub use server::{LocalServer, Options};
