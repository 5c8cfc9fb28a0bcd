//! Each function's cold start, timed from its binary's start to its first request for work.

use std::time::{Duration, Instant};

use flash_sale_local::known_secrets::{ADMIN_TOKEN, WEBHOOK_SECRET};
use flash_sale_local::moto::Moto;

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

/// Median start-to-ready time and size of every function binary in `functions_dir`, started
/// two ways: with `DATABASE_URL`, and as deployed, with a Secrets Manager secret (served by a
/// moto_server on loopback) that the cold start reads.
pub async fn init_times(
    functions_dir: &std::path::Path,
    runs: usize,
    database_url: &str,
) -> Result<bool, String> {
    let url = url::Url::parse(database_url).map_err(|err| format!("DATABASE_URL: {err}"))?;
    let moto = Moto::start().await?;
    let secret = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await)
        .create_secret()
        .name("flash-sale-bench-init")
        .secret_string(
            serde_json::json!({"username": url.username(), "password": url.password().unwrap_or("")})
                .to_string(),
        )
        .send()
        .await
        .map_err(|err| format!("creating the secret in moto_server: {err:?}"))?;
    let arn = secret
        .arn()
        .ok_or("moto_server returned no ARN")?
        .to_owned();
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(3306).to_string();
    let name = url.path().trim_start_matches('/').to_owned();
    let with_url = [("DATABASE_URL", database_url)];
    let with_secret = [
        ("DATABASE_SECRET_ARN", arn.as_str()),
        ("DATABASE_HOST", host.as_str()),
        ("DATABASE_PORT", port.as_str()),
        ("DATABASE_NAME", name.as_str()),
        // The local server speaks no TLS; on AWS the default, verify_identity, applies.
        ("DATABASE_SSL_MODE", "disabled"),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];

    println!(
        "{:<18} {:>8} {:>18} {:>21}",
        "function", "size MB", "init ms, URL (p50)", "init ms, secret (p50)"
    );
    for function in functions()? {
        let binary = functions_dir.join(&function);
        let size = std::fs::metadata(&binary)
            .map_err(|err| format!("{}: {err}", binary.display()))?
            .len();
        let mut medians = Vec::new();
        for database in [&with_url[..], &with_secret[..]] {
            let mut times = Vec::new();
            for _ in 0..runs.max(5) {
                times.push(init_time(&binary, database).await?);
            }
            times.sort();
            medians.push(times[times.len() / 2].as_secs_f64() * 1000.0);
        }
        println!(
            "{:<18} {:>8.2} {:>18.2} {:>21.2}",
            function,
            size as f64 / 1e6,
            medians[0],
            medians[1]
        );
    }
    Ok(true)
}
