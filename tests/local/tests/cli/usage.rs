//! The command line itself: its usage text, what it refuses, and what `migrate` says it did.

use std::process::Output;

use flash_sale_e2e::testing::TestDb;
use secrecy::ExposeSecret;

/// A database URL nothing answers on: the usage paths must not need one.
const NOWHERE: &str = "mysql://root@127.0.0.1:1/flash_sale";

async fn run(args: &[&str], database_url: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flash-sale-local"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("AWS_LAMBDA_LOG_FORMAT")
        .output()
        .await
        .expect("run flash-sale-local")
}

#[tokio::test]
async fn help_is_the_usage_on_stdout_with_exit_status_0() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["reconcile", "--help"],
    ] {
        let output = run(args, NOWHERE).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stdout}");
        assert!(stdout.starts_with("flash-sale-local: "), "{stdout}");
        for command in [
            "flash-sale-local [serve]",
            "flash-sale-local migrate",
            "flash-sale-local reconcile [--repair] [--product ID]",
        ] {
            assert!(
                stdout.contains(command),
                "{args:?} names {command}: {stdout}"
            );
        }
        assert!(output.stderr.is_empty(), "{args:?}: nothing on stderr");
    }
}

#[tokio::test]
async fn an_unknown_argument_is_named_with_the_usage_on_stderr_and_exit_status_2() {
    for (args, named) in [
        (&["--verbose"][..], "\"--verbose\""),
        (&["serve", "now"], "\"now\""),
        (&["migrate", "--force"], "\"--force\""),
        (&["reconcile", "--fix"], "\"--fix\""),
        (&["reconcile", "--product", "seven"], "\"seven\""),
    ] {
        let output = run(args, NOWHERE).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: names {named}: {stderr}");
        assert!(stderr.contains("Usage:"), "{args:?}: the usage: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[tokio::test]
async fn migrate_names_the_migrations_it_applied_then_says_the_schema_was_current() {
    let db = TestDb::not_created();
    let url = db.url.expose_secret().to_owned();
    let migrations = shared::store::db::MIGRATOR.iter().count();

    let first = run(&["migrate"], &url).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{stdout}");
    let applied: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("applied migration "))
        .collect();
    assert_eq!(
        applied.len(),
        migrations,
        "one line per migration: {stdout}"
    );
    assert!(applied[0].starts_with("applied migration 1: "), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "database {} is up to date ({migrations} migrations)",
            db.name
        )),
        "{stdout}"
    );

    let again = run(&["migrate"], &url).await;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("applied migration"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "database {} was already up to date ({migrations} migrations)",
            db.name
        )),
        "{stdout}"
    );
}
