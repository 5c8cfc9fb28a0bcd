//! flash-sale on one machine: every HTTP function mounted at its API path, calling the very
//! `handle` functions the Lambdas run, plus the in-process expiry timers, the sweeper and the
//! durable payment queue workers. Also what the benchmark and the end-to-end tests both use
//! (database names, the known secrets, the AWS emulator, a proxy that counts the database
//! commands sent through it), so the benchmark needs nothing of theirs.

pub mod capacity;
pub mod database;
pub mod known_secrets;
pub mod moto;
pub mod server;
pub mod sqs_poller;
pub mod wire;

pub use server::{LocalServer, Options};
