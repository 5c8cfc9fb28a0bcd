//! A MariaDB server of one test's own, to stop and start again: the fault tests take the database
//! away without touching the server every other test (running in parallel) shares. A fresh data
//! directory in the temp directory, a free loopback port, `root` with an empty password over TCP;
//! killed and deleted when dropped. Needs MariaDB's `mariadb-install-db` and `mariadbd` (Debian:
//! `apt-get install mariadb-server`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

/// How long a start or a stop may take before the test gives up on the server.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PrivateMariaDb {
    dir: PathBuf,
    port: u16,
    mariadbd: PathBuf,
    child: Option<Child>,
}

impl PrivateMariaDb {
    /// Initialises a data directory (a second or two) and starts the server on it.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flash-sale-mariadb-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the MariaDB directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            mariadbd: find(&["mariadbd", "mysqld"], &["/usr/sbin", "/usr/local/sbin"]),
            dir,
            port,
            child: None,
        };
        let install_db = find(
            &["mariadb-install-db", "mysql_install_db"],
            &["/usr/bin", "/usr/local/bin"],
        );
        let mut install = Command::new(install_db);
        // A temporary directory of its own: servers bootstrapping side by side in the shared /tmp
        // were seen to trip over each other's temporary tables.
        std::fs::create_dir_all(server.tmp()).expect("create the MariaDB tmpdir");
        install.args([
            "--no-defaults",
            &format!("--datadir={}", server.data().display()),
            &format!("--tmpdir={}", server.tmp().display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]);
        install.args(server.user());
        let installed = install
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            installed.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&installed.stdout),
            String::from_utf8_lossy(&installed.stderr)
        );
        server.start_again().await;
        server
    }

    /// `mysql://root@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server on the same port and data directory, and waits until it answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running already");
        let mut command = Command::new(&self.mariadbd);
        // --no-defaults first: nothing from /etc/mysql, whatever the machine configured there.
        command.args([
            "--no-defaults",
            &format!("--datadir={}", self.data().display()),
            &format!("--tmpdir={}", self.tmp().display()),
            &format!("--port={}", self.port),
            "--bind-address=127.0.0.1",
            &format!("--socket={}", self.dir.join("mysqld.sock").display()),
            &format!("--pid-file={}", self.dir.join("mysqld.pid").display()),
            &format!("--log-error={}", self.log().display()),
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--innodb-buffer-pool-load-at-startup=OFF",
            "--innodb-buffer-pool-dump-at-shutdown=OFF",
            // MariaDB 10.11's default modes, and MySQL 8's behaviour where it differs (as CI's
            // server is set in .ci/run): fractions of a second a column cannot keep are rounded,
            // and a GROUP BY must determine every column it selects.
            "--sql-mode=STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,\
             NO_ENGINE_SUBSTITUTION,TIME_ROUND_FRACTIONAL,ONLY_FULL_GROUP_BY",
        ]);
        command.args(self.user());
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(conn) = MySqlConnection::connect(&self.url("mysql")).await {
                let _ = conn.close().await;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("mariadbd exited with {status}: {}", self.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mariadbd did not answer on port {} within {READY_TIMEOUT:?}: {}",
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts the server down as an operator would (SIGTERM) and waits until it has exited.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        signal(&child, "TERM");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while child.try_wait().expect("wait for mariadbd").is_none() {
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mariadbd did not shut down within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Freezes the server (SIGSTOP): its connections stay open and its port accepts, but nothing
    /// answers, as a database behind a network black hole or mid-failover looks to a client.
    pub fn freeze(&self) {
        signal(self.child.as_ref().expect("the server is running"), "STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        signal(self.child.as_ref().expect("the server is running"), "CONT");
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// mariadbd refuses to run as root unless told to; anyone else runs it as themselves.
    fn user(&self) -> Option<&'static str> {
        let root = std::fs::metadata(&self.dir).is_ok_and(|meta| meta.uid() == 0);
        root.then_some("--user=root")
    }
}

/// The shell's kill: a `kill` binary is not on every minimal machine.
fn signal(child: &std::process::Child, name: &str) {
    let signalled = Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" \"$2\"",
            "sh",
            name,
            &child.id().to_string(),
        ])
        .status()
        .expect("run sh");
    assert!(signalled.success(), "kill -s {name} mariadbd failed");
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen server cannot die until it runs again.
            let _ = Command::new("sh")
                .args(["-c", "kill -s CONT \"$1\"", "sh", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first of `names` on the PATH or in `dirs` (the sbin directories are often not on a
/// user's PATH).
fn find(names: &[&str], dirs: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut search: Vec<PathBuf> = std::env::split_paths(&path).collect();
    search.extend(dirs.iter().map(PathBuf::from));
    names
        .iter()
        .flat_map(|name| search.iter().map(move |dir| dir.join(name)))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!("none of {names:?} found: the fault tests need MariaDB installed (apt-get install mariadb-server)")
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}
