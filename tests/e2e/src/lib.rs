//! What the end-to-end tests share: a fresh database per test and a local server on it
//! (`testing`), the contract every answer is checked against (`openapi`), a MariaDB server of a
//! test's own (`mariadb`), and counters corrupted on purpose (`drift`).

pub mod drift;
pub mod mariadb;
pub mod openapi;
pub mod testing;
