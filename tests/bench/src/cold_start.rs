//! Each function's cold start, timed from its binary's start to its first request for work.

use std::time::{Duration, Instant};

use flash_sale_local::known_secrets::{ADMIN_TOKEN, WEBHOOK_SECRET};

/// Every function's binary name: the crates under `functions/`.
pub fn functions() -> Result<Vec<String>, String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../functions");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|err| format!("{dir}: {err}"))?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// A function's cold start: from spawning its binary to its first request for work on the
/// Lambda Runtime API (which a loopback listener here plays). That span is the init phase Lambda
/// bills and a first caller waits for, minus the platform's own part. `database` is how it finds
/// its database: `DATABASE_URL`, or a Secrets Manager secret and the host.
pub async fn init_time(
    binary: &std::path::Path,
    database: &[(&str, &str)],
) -> Result<Duration, String> {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|err| err.to_string())?;
    let runtime_api = listener
        .local_addr()
        .map_err(|err| err.to_string())?
        .to_string();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        // Only what Lambda would set, and nothing of this shell's (its DATABASE_URL, its AWS_*).
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env(
            "AWS_LAMBDA_FUNCTION_NAME",
            binary
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("function"),
        )
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .envs(database.iter().copied())
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("{}: {err}", binary.display()))?;
    let accepted = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut stream, _) = listener.accept().await?;
        let mut request = [0u8; 256];
        let read = stream.read(&mut request).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&request[..read]).into_owned())
    })
    .await;
    let elapsed = started.elapsed();
    let _ = child.kill().await;
    match accepted {
        Ok(Ok(request)) if request.contains("/runtime/invocation/next") => Ok(elapsed),
        Ok(Ok(request)) => Err(format!("unexpected first request: {request:?}")),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "{} never asked for work within 10 s",
            binary.display()
        )),
    }
}
