//! A local AWS emulator (`moto_server`, `pip install 'moto[server]'`) of its caller's own, on a
//! free loopback port: what the AWS tests and the benchmark's cold starts talk to instead of AWS.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long `moto_server` may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `moto_server`; stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| format!("no free port for moto_server: {err}"))?
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run moto_server (pip install 'moto[server]'): {err}"))?;
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("moto_server did not start on port {port}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(moto)
    }

    /// Explicit region and dummy credentials: nothing is looked up anywhere but here.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
