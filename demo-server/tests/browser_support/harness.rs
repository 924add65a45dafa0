//! The browser test's harness: the real server and chromedriver as child
//! processes (killed with their process groups), a WebDriver session, and
//! the artifacts directory.

use crate::*;

pub(crate) struct Harness {
    pub(crate) name: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) artifacts: PathBuf,
    pub(crate) shots: Vec<PathBuf>,
    pub(crate) http: HttpClient,
    pub(crate) wd: WebDriver,
    // Dropped in this order: the browser before the server.
    pub(crate) driver: Driver,
    pub(crate) server: Server,
}

impl Harness {
    pub(crate) async fn start(name: &'static str) -> Harness {
        Self::start_with(name, &[]).await
    }

    /// [`Harness::start`] with more arguments for the server (a flag a
    /// scenario needs, e.g. a short wait window).
    pub(crate) async fn start_with(name: &'static str, server_args: &[&str]) -> Harness {
        let (chromium, chromedriver) = browser_binaries();
        let artifacts = artifacts_dir();
        std::fs::create_dir_all(&artifacts)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", artifacts.display()));
        // Leave only this run's files under this test's prefix.
        for entry in std::fs::read_dir(&artifacts)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let server = Server::start(
            &http,
            &artifacts.join(format!("{name}-server.log")),
            server_args,
        )
        .await;
        let driver = Driver::start(
            &http,
            &chromedriver,
            &artifacts.join(format!("{name}-chromedriver.log")),
        )
        .await;
        let wd = WebDriver::new_session(http.clone(), &driver, &chromium)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start a Chromium session ({e}); chromedriver log: {}",
                    driver.log.display()
                )
            });
        Harness {
            name,
            scenario: "setup",
            artifacts,
            shots: Vec::new(),
            http,
            wd,
            driver,
            server,
        }
    }

    /// Saves a screenshot of the viewport as `<name>-<what>.png`.
    pub(crate) async fn shot(&mut self, what: &str) -> Result<PathBuf, String> {
        let path = self.artifacts.join(format!("{}-{what}.png", self.name));
        self.wd.screenshot(&path).await?;
        println!("screenshot: {}", path.display());
        self.shots.push(path.clone());
        Ok(path)
    }

    /// Keeps evidence of a failure, ends the session, and panics with the
    /// failure; the processes are killed when `self` drops.
    pub(crate) async fn finish(mut self, outcome: Result<(), String>, started: Instant) {
        let mut evidence = Vec::new();
        if outcome.is_err() {
            if let Err(e) = self.shot("failure").await {
                eprintln!("no failure screenshot: {e}");
            }
            let html = self.artifacts.join(format!("{}-failure.html", self.name));
            match self.wd.source().await {
                Ok(s) => match std::fs::write(&html, s) {
                    Ok(()) => evidence.push(html),
                    Err(e) => eprintln!("cannot write {}: {e}", html.display()),
                },
                Err(e) => eprintln!("no page source: {e}"),
            }
        }
        if let Err(e) = self.wd.delete().await {
            eprintln!("cannot delete the WebDriver session: {e}");
        }
        println!("browser test took {:.1?}", started.elapsed());
        if let Err(e) = outcome {
            let list = |paths: &[PathBuf]| {
                paths
                    .iter()
                    .map(|p| format!("\n  {}", p.display()))
                    .collect::<String>()
            };
            panic!(
                "scenario {} failed: {e}\nartifacts:{}{}\n  {}\n  {}",
                self.scenario,
                list(&self.shots),
                list(&evidence),
                self.server.log.display(),
                self.driver.log.display(),
            );
        }
    }
}

/// `browser-artifacts/` in the cargo target directory this test was built
/// in (the nearest ancestor of the test binary holding `CACHEDIR.TAG`), or
/// `$BROWSER_ARTIFACTS_DIR`.
pub(crate) fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BROWSER_ARTIFACTS_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("browser-artifacts")
}

/// The browser and chromedriver, or a panic that says how to install them.
pub(crate) fn browser_binaries() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("CHROMIUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM));
    let chromedriver = std::env::var_os("CHROMEDRIVER_BIN")
        .map(PathBuf::from)
        .or_else(|| in_path("chromedriver"));
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!("Chromium ({} not found)", chromium.display()));
    }
    match &chromedriver {
        None => missing.push("chromedriver (not found in PATH)".to_string()),
        Some(d) if !d.is_file() => {
            missing.push(format!("chromedriver ({} not found)", d.display()))
        }
        Some(_) => {}
    }
    match chromedriver {
        Some(driver) if missing.is_empty() => (chromium, driver),
        _ => panic!(
            "the browser test needs {}: {INSTALL_HINT}. It fails rather than skips without them; \
             leave out --features chromium to build without it.",
            missing.join(" and ")
        ),
    }
}

pub(crate) fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A child process killed (with its process group, when it leads one) and
/// reaped on drop, also when the test panics.
pub(crate) struct ProcessGuard {
    pub(crate) child: Child,
    pub(crate) group: bool,
    pub(crate) reaped: bool,
}

impl ProcessGuard {
    /// Whether the process has exited (and then reaps it).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.reaped |= status.is_some();
        status
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        // Until it is reaped, the leader's id still names its group, so the
        // kill cannot reach anybody else's processes.
        if self.group && !self.reaped {
            // The shell's own kill: procps may not be installed.
            let _ = Command::new("sh")
                .args([
                    "-c",
                    "kill -s KILL -- -\"$0\"",
                    &self.child.id().to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `demo-server` binary on a loopback port the OS picked, with its
/// database in a fresh directory.
pub(crate) struct Server {
    pub(crate) base: String,
    /// The admin token the server was started with.
    pub(crate) token: String,
    pub(crate) log: PathBuf,
    // Dropped in this order: the process before its directory.
    pub(crate) _process: ProcessGuard,
    pub(crate) _data: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start(http: &HttpClient, log: &Path, args: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("temp data dir");
        let out = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("log file handle");
        let token: String = (0..32)
            .map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16]))
            .collect();
        let child = Command::new(SERVER_BIN)
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .env("DEMO_ADMIN_TOKEN", &token)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SERVER_BIN}: {e}"));
        let mut process = ProcessGuard {
            child,
            group: false,
            reaped: false,
        };
        // The server prints its address once it listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|l| l.split_once("listening on ").map(|(_, u)| u.trim()))
                .filter(|u| u.starts_with("http://127.0.0.1:"))
            {
                break url.to_string();
            }
            if let Some(status) = process.exited() {
                panic!("demo-server exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "demo-server did not print its address in 30 s:\n{text}"
            );
            tokio::time::sleep(POLL).await;
        };
        let health = format!("{base}/healthz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http_json(http, Method::GET, &health, None).await {
                Ok((StatusCode::OK, _)) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{health} not healthy in 30 s: {other:?}"
                ),
            }
            tokio::time::sleep(POLL).await;
        }
        Server {
            base,
            token,
            log: log.to_path_buf(),
            _process: process,
            _data: data,
        }
    }
}

/// chromedriver on a free loopback port, leading its own process group so
/// that the browsers it starts die with it.
pub(crate) struct Driver {
    pub(crate) base: String,
    pub(crate) log: PathBuf,
    // Dropped in this order: the processes before the browser profile.
    pub(crate) _process: ProcessGuard,
    pub(crate) profile: tempfile::TempDir,
}

impl Driver {
    pub(crate) async fn start(http: &HttpClient, chromedriver: &Path, log: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().expect("temp browser profile");
        let mut last_error = String::from("no answer");
        // A port found free may be taken before chromedriver binds it: retry.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e}; {INSTALL_HINT}",
                        chromedriver.display()
                    )
                });
            let mut process = ProcessGuard {
                child,
                group: true,
                reaped: false,
            };
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok((_, status)) =
                    http_json(http, Method::GET, &format!("{base}/status"), None).await
                {
                    if status["value"]["ready"] == true {
                        return Driver {
                            base,
                            log: log.to_path_buf(),
                            _process: process,
                            profile,
                        };
                    }
                    last_error = format!("{status}");
                }
                if let Some(status) = process.exited() {
                    last_error = format!("exited ({status})");
                    break;
                }
                if Instant::now() >= deadline {
                    last_error = format!("not ready at /status in 20 s (last: {last_error})");
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        panic!(
            "chromedriver did not start: {last_error}; log: {}",
            log.display()
        );
    }
}
