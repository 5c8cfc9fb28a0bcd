//! A local AWS emulator (`moto_server`) of its caller's own, on a free loopback port: what the
//! AWS tests and the benchmark's cold starts talk to instead of AWS. Taken from the PATH, or else
//! from a venv under the target directory that the first start in a process creates, as
//! .ci/lint-template.sh and .ci/sam-build.sh make theirs: so `cargo test` needs no set-up of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// How long `moto_server` may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The moto of the venv (its `server` extra is what makes `moto_server` run): the release the AWS
/// tests were last run against.
const MOTO_VERSION: &str = "5.2.1";

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
        let moto_server = tokio::task::spawn_blocking(moto_server)
            .await
            .map_err(|err| format!("looking for moto_server: {err}"))??;
        let child = Command::new(&moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run {}: {err}", moto_server.display()))?;
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

/// The `moto_server` to run, found (or installed) once per process: tests start emulators from
/// many threads at once, and all but the first wait here for the one install.
fn moto_server() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_or_install).clone()
}

fn find_or_install() -> Result<PathBuf, String> {
    // Whatever answers on the PATH; a moto without its `server` extra has the command but fails.
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if on_path {
        return Ok(PathBuf::from("moto_server"));
    }
    let venv = target_dir().join("moto-venv");
    let (python, moto_server) = (venv.join("bin/python"), venv.join("bin/moto_server"));
    if moto_server.is_file() && installed_moto(&python).as_deref() == Some(MOTO_VERSION) {
        return Ok(moto_server);
    }
    eprintln!(
        "moto_server is not on the PATH: installing moto[server]=={MOTO_VERSION} into {}",
        venv.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!("moto[server]=={MOTO_VERSION}")))?;
    Ok(moto_server)
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root when relative, as the .ci scripts take
/// it), or the workspace's `target/`.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}

/// The version of moto the venv's python has, if any.
fn installed_moto(python: &Path) -> Option<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('moto'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
