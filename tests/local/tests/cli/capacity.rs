//! `flash-sale-local capacity`, run as a person runs it: the plan on stdout, exit status 1 while a
//! limit must be raised, 0 once every figure fits, 2 on a usage error. No database is needed.

use std::process::Output;

/// A database URL nothing answers on: planning must not touch one.
const NOWHERE: &str = "mysql://root@127.0.0.1:1/flash_sale";

async fn capacity(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flash-sale-local"))
        .arg("capacity")
        .args(args)
        .env("DATABASE_URL", NOWHERE)
        .output()
        .await
        .expect("run flash-sale-local capacity")
}

#[tokio::test]
async fn a_sale_over_its_quotas_prints_the_plan_and_what_to_raise_with_exit_status_1() {
    let output = capacity(&["--holds-per-second", "5000", "--visitors", "200000"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("Capacity plan: 5,000 holds/s, 200,000 visitors"),
        "{stdout}"
    );
    for section in [
        "Lambda (concurrency = rate x duration)",
        "Edge and API",
        "EventBridge Scheduler",
        "SQS FIFO, EventBridge, Secrets Manager",
        "Database (db.serverless)",
        "Hot product's stock buckets",
        "Before the sale:",
    ] {
        assert!(stdout.contains(section), "{section}: {stdout}");
    }
    assert!(
        stdout.contains("  - EventBridge Scheduler: Invocations throttle limit\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the sweeper settles every passed deadline"),
        "{stdout}"
    );
    assert!(output.stderr.is_empty(), "nothing on stderr");
}

#[tokio::test]
async fn a_sale_within_every_limit_exits_0_and_raised_quotas_count() {
    let small = capacity(&["--holds-per-second", "100", "--visitors", "1000"]).await;
    let stdout = String::from_utf8_lossy(&small.stdout);
    assert_eq!(small.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.ends_with("Every figure is within its limit.\n"),
        "{stdout}"
    );

    let raised = capacity(&[
        "--holds-per-second",
        "5000",
        "--visitors",
        "200000",
        "--quota",
        "api-rps=20000",
        "--quota",
        "api-route-rps=6000",
        "--quota",
        "create-schedule-tps=10000",
        "--quota",
        "delete-schedule-tps=3000",
        "--quota",
        "scheduler-invocations-tps=3000",
        "--quota",
        "processor-max-concurrency=100",
        "--quota",
        "database-max-acu=128",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&raised.stdout);
    assert_eq!(raised.status.code(), Some(0), "{stdout}");
}

#[tokio::test]
async fn capacity_help_lists_every_flag_and_quota_key() {
    let output = capacity(&["--help"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("flash-sale-local capacity: "),
        "{stdout}"
    );
    for named in [
        "--holds-per-second",
        "--writer-ms-per-hold",
        "--lock-ms-per-hold",
        "--quota KEY=VALUE",
        "create-schedule-tps",
        "put-events-tps",
    ] {
        assert!(stdout.contains(named), "{named}: {stdout}");
    }
}

#[tokio::test]
async fn a_bad_flag_is_named_with_the_usage_on_stderr_and_exit_status_2() {
    for (args, named) in [
        (&["--visitors", "10"][..], "--holds-per-second"),
        (
            &["--holds-per-second", "10", "--visitors", "1", "--fast"],
            "\"--fast\"",
        ),
        (
            &["--holds-per-second", "many", "--visitors", "1"],
            "\"many\"",
        ),
        (
            &[
                "--holds-per-second",
                "10",
                "--visitors",
                "1",
                "--quota",
                "nope=1",
            ],
            "\"nope\"",
        ),
        (
            &[
                "--holds-per-second",
                "10",
                "--visitors",
                "1",
                "--region",
                "moon",
            ],
            "\"moon\"",
        ),
    ] {
        let output = capacity(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: names {named}: {stderr}");
        assert!(stderr.contains("Usage:"), "{args:?}: the usage: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}
