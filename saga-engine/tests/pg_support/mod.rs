//! A throwaway PostgreSQL server for tests: `initdb` into a temporary
//! directory, `pg_ctl start` on 127.0.0.1 at a free port, trust
//! authentication on loopback only, `fsync` and `synchronous_commit` on
//! (the defaults, written out so that nobody's config changes them), and
//! `pg_ctl stop` on drop.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` system user (`runuser -u postgres --`), owning its directory.
//! The binaries come from `SAGA_PG_BIN` if set, else the first directory in
//! `PATH`, else the newest `/usr/lib/postgresql/*/bin`, holding both
//! `initdb` and `pg_ctl`. Missing binaries fail the test with a message
//! saying what to install: these tests only run with `--features postgres`,
//! where a server is expected, so they never skip.
//!
//! Use from a test crate with `mod pg_support;`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A running PostgreSQL server, stopped (and its directory removed) on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
    watchdog: Option<std::process::Child>,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish()
    }
}

/// The directory holding `initdb` and `pg_ctl`, or a panic saying what to install.
pub fn pg_bin_dir() -> PathBuf {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("SAGA_PG_BIN") {
        let d = PathBuf::from(d);
        assert!(
            has_both(&d),
            "SAGA_PG_BIN={} holds no initdb and pg_ctl",
            d.display()
        );
        return d;
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_both(d)) {
            return d;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let d = e.path().join("bin");
            has_both(&d).then_some((v, d))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, d)) => d,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in SAGA_PG_BIN, PATH \
             or /usr/lib/postgresql/*/bin. The `postgres` feature's tests start a real \
             server: install it (Debian: apt-get install -y postgresql) or point \
             SAGA_PG_BIN at its bin directory."
        ),
    }
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the effective user.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

impl PgServer {
    /// Initialises and starts a server; panics with its log if it cannot.
    pub fn start() -> PgServer {
        let bin = pg_bin_dir();
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("saga-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "running as root: cannot chown {} to the `postgres` user (PostgreSQL \
                 refuses to run as root; the Debian package `postgresql` creates that user)",
                dir.path().display()
            );
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            as_postgres,
            running: false,
            watchdog: None,
        };
        let data = server.data_dir();
        let out = server.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                // Only initdb's own final sync of the new files is skipped;
                // the server still fsyncs every commit.
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A port taken between our probe and the server's bind makes the
        // start fail; try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            server.write_config();
            match server.pg_ctl_start() {
                Ok(()) => {
                    server.running = true;
                    server.watchdog = server.spawn_watchdog();
                    return server;
                }
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as the superuser `postgres`.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of the default database `postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates database `name` (letters, digits, `_`) and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database name {name:?}"
        );
        let client = self.client("postgres").await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
        self.url_for(name)
    }

    /// A plain client on database `db` (its connection runs on a task).
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url_for(db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e:?}", self.url_for(db)));
        tokio::spawn(conn);
        client
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no
    /// checkpoint; the next start replays the WAL) and starts it again on
    /// the same port and data.
    pub fn crash_restart(&mut self) {
        self.stop("immediate");
        if let Err(e) = self.pg_ctl_start() {
            panic!("PostgreSQL did not restart: {e}");
        }
        self.running = true;
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn write_config(&self) {
        use std::io::Write;
        let conf = self.data_dir().join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&conf)
            .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        // listen only on loopback, its own socket directory (the system's
        // may not be writable), durable commits, and room for several
        // engine processes with their pools.
        write!(
            f,
            "listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             max_connections = 300\n\
             shared_buffers = 128MB\n",
            self.port,
            self.dir.path().display()
        )
        .expect("write postgresql.auto.conf");
    }

    /// A shell that stops the server if this process dies without
    /// dropping it (a test killed, or aborted by a panic in a destructor),
    /// so no server outlives its tests.
    fn spawn_watchdog(&self) -> Option<std::process::Child> {
        let mut stop = vec![];
        if self.as_postgres {
            stop.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        stop.push(self.bin.join("pg_ctl").display().to_string());
        stop.extend(["-D".into(), self.data_dir().display().to_string()]);
        stop.extend(["-m", "immediate", "stop"].map(String::from));
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {} >/dev/null 2>&1; rm -rf '{}'",
            std::process::id(),
            stop.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" "),
            self.dir.path().display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start: {}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ))
        }
    }

    fn stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", mode, "-w", "-t", "60", "stop"],
        );
        if !out.status.success() {
            eprintln!(
                "pg_ctl stop: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = false;
    }

    /// Runs one of the server's programs, as `postgres` when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.stop("fast");
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Waits up to `limit` for `f` to return true, polling every 20 ms.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
