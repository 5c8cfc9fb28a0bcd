//! README's walkthrough, run as a newcomer runs it: the very block README shows, pasted into
//! bash against a running server, twice.

use std::process::Stdio;

use flash_sale_e2e::testing::{ADMIN_TOKEN, BUYER_JWT_SECRET, TestDb, WEBHOOK_SECRET};

/// The ```bash block of README's "Try it", with its first line (where the server is and its
/// secrets) pointed at `base` and the test server's secrets.
fn walkthrough(base: &str) -> String {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
    let try_it = &readme[readme.find("## Try it").expect("a Try it section")..];
    let start = try_it.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let block = &try_it[start..start + try_it[start..].find("```").expect("its end")];
    let (first, rest) = block.split_once('\n').expect("more than one line");
    assert!(first.starts_with("B=http://127.0.0.1:3000 "), "{first}");
    format!(
        "B={base} ADMIN_TOKEN={ADMIN_TOKEN} WEBHOOK_SECRET={WEBHOOK_SECRET} BUYER_JWT_SECRET={BUYER_JWT_SECRET}\n{rest}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written_twice() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let script = walkthrough(&server.url());
    for run in 1..=2 {
        let output = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "run {run}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let statuses: Vec<&str> = stdout
            .lines()
            .filter_map(|line| line.split_once(' ').map(|(status, _)| status))
            .collect();
        assert_eq!(
            statuses,
            [
                "201", "201", "201", "200", "201", "202", "200", "200", "409", "401"
            ],
            "run {run}: {stdout}"
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[1][4..],
            lines[2][4..],
            "run {run}: the key replays its hold"
        );
        assert!(
            lines[6].contains(r#""status":"paid""#),
            "run {run}: {}",
            lines[6]
        );
        assert!(
            lines[6].contains(r#""outcome":"applied""#),
            "run {run}: {}",
            lines[6]
        );
        assert!(
            lines[8].contains("buyer_limit_reached"),
            "run {run}: {}",
            lines[8]
        );
        assert!(lines[9].contains("unauthorized"), "run {run}: {}", lines[9]);
        assert!(
            lines[7].contains(r#""available_stock":23"#) && lines[7].contains(r#""sold_stock":2"#),
            "run {run}: {}",
            lines[7]
        );
    }
}
