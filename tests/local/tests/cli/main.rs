//! The real `flash-sale-local` binary, run as a person runs it. Integration tests of this package
//! because cargo gives only those the path of its binary (`CARGO_BIN_EXE_flash-sale-local`); the
//! helpers come from the end-to-end tests' package (a dev-dependency).

mod capacity;
mod logs;
mod reconcile;
mod usage;
