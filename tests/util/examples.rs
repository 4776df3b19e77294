//! The crate's examples as child processes: built once per test binary
//! with the test's features and profile, started on loopback, their stdout
//! read line by line, killed by PID when a test lets go of them. Also the
//! external programs the tests drive (`redis-cli`, `systemd-socket-activate`
//! ...), which a machine may lack.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// The examples the tests run, built together by one `cargo build`.
pub const EXAMPLES: [&str; 5] = ["echo", "handover", "mini_redis", "http_hello", "udp_echo"];

/// The examples that need a feature, built when this test has it.
const FEATURE_EXAMPLES: [(&str, bool); 2] = [
    ("tls_reload", cfg!(feature = "rustls")),
    ("metrics", cfg!(feature = "metrics")),
];

/// Every example built for this test: [`EXAMPLES`] and the
/// [`FEATURE_EXAMPLES`] whose feature is on.
fn built() -> impl Iterator<Item = &'static str> {
    let featured = FEATURE_EXAMPLES.iter().filter(|(_, on)| *on);
    EXAMPLES.into_iter().chain(featured.map(|(name, _)| *name))
}

/// Builds [`EXAMPLES`] once per test binary, with this test's features and
/// profile, and returns the directory holding them.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = DIR.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--no-default-features"])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        for name in built() {
            cargo.args(["--example", name]);
        }
        // The crate's features, as Cargo.toml lists them.
        let features: Vec<&str> = [
            ("tls", cfg!(feature = "tls")),
            ("rustls", cfg!(feature = "rustls")),
            ("metrics", cfg!(feature = "metrics")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if !features.is_empty() {
            cargo.arg("--features").arg(features.join(","));
        }
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        // What cargo set for this test would reach build scripts that watch
        // it (ring's watch CARGO_PKG_NAME): they would run again, and the
        // next `cargo test` would rebuild everything after them once more.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let per_crate = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CFG_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix));
            if per_crate
                || ["OUT_DIR", "CARGO_TARGET_TMPDIR", "CARGO_PRIMARY_PACKAGE"].contains(&&*name)
            {
                cargo.env_remove(&*name);
            }
        }
        match cargo.status() {
            Ok(status) if status.success() => {}
            other => return Err(format!("cargo build of the examples failed: {other:?}")),
        }
        // This test runs from <target>/<profile>/deps; examples live beside.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .ok_or("no profile directory above the test binary")?;
        Ok(profile.join("examples"))
    });
    built.as_ref().unwrap_or_else(|e| panic!("{e}"))
}

/// The path of a built example (see [`built`]).
pub fn path(name: &str) -> PathBuf {
    assert!(
        built().any(|built| built == name),
        "{name} is not built for the tests"
    );
    dir().join(name)
}

/// A command running the example `name`.
pub fn command(name: &str) -> Command {
    Command::new(path(name))
}

/// A child process whose stdout is read line by line (stderr is the
/// test's); killed by PID when dropped while still running.
pub struct Process {
    child: Child,
    name: String,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, in order.
    seen: Vec<String>,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout piped.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Until the child (and whatever inherited its stdout) exits.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            child,
            name: name.to_string(),
            lines,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Reads the lines printed so far without waiting; returns all lines
    /// read until now.
    pub fn poll_lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Waits up to `limit` for a line for which `what` holds, reading the
    /// ones before it; panics with everything printed if none comes.
    pub fn wait_line(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{} printed no line with {what} within {limit:?} ({e:?}); its stdout: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let kill = signal(name, &pid);
        assert!(
            kill.as_ref().is_ok_and(|s| s.success()),
            "kill -{name} {pid}: {kill:?}"
        );
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit (kills it and panics
    /// when it does not), then reads the rest of its stdout.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_exit(&mut self.child, limit);
        // The pipe closes with the process, unless a grandchild holds it.
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill(); // SIGKILL to this child's PID
            let _ = self.child.wait();
        }
    }
}

/// An example running as a child process, once it said `listening on ADDR`.
pub struct Served {
    pub process: Process,
    pub addr: SocketAddr,
}

impl Served {
    /// Starts the example on a free loopback port and waits for its
    /// `listening on ADDR` line.
    pub fn start(name: &str, args: &[&str]) -> Served {
        let mut command = command(name);
        command.args(["--port", "0"]).args(args);
        Served::wait(Process::spawn(name, command))
    }

    /// Starts the example with exactly `args` (no `--port 0`).
    pub fn start_with(name: &str, args: &[&str]) -> Served {
        let mut command = command(name);
        command.args(args);
        Served::wait(Process::spawn(name, command))
    }

    /// Waits for the `listening on ADDR` line of a started process.
    pub fn wait(mut process: Process) -> Served {
        let line = process.wait_line("`listening on`", PATIENCE, |l| {
            l.starts_with("listening on ")
        });
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("{} printed {line:?}", process.name()));
        Served { process, addr }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server with SIGTERM and expects a clean exit.
    pub fn stop(mut self) {
        self.process.signal("TERM");
        let status = self.process.wait_exit(PATIENCE * 2);
        assert!(status.success(), "the server exited with {status}");
    }
}

/// Sends a signal with the shell's `kill`, which every machine has.
pub fn signal(name: &str, pid: &str) -> std::io::Result<ExitStatus> {
    Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
}

/// Waits up to `limit` for `child` to exit; kills it and panics if not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The command for an external program, or `None` when it is missing and
/// `ATOLL_SKIP_EXTERNAL_CLIENTS=1` allows skipping.
pub fn external(program: &str, package: &str) -> Option<Command> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    if found {
        return Some(Command::new(program));
    }
    if std::env::var("ATOLL_SKIP_EXTERNAL_CLIENTS").as_deref() == Ok("1") {
        eprintln!("skipped: `{program}` is not installed");
        return None;
    }
    panic!(
        "`{program}` is not installed: install the Debian package `{package}` \
         (apt-get install {package}), or set ATOLL_SKIP_EXTERNAL_CLIENTS=1 to skip this test"
    );
}
