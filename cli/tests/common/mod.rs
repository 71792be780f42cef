//! Running `agentlog serve` from tests: start it on a port it picks, wait
//! for its own word that it is ready (its log), read its metrics, reap it
//! on every path. Every wait is
//! bounded, so a stuck service fails the test instead of hanging the suite,
//! and a failing test prints the end of serve's log.
#![allow(dead_code)]
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use agentlog_tests::nats::NatsServer;

pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()))
}

pub struct Node {
    child: Child,
    pub http: u16,
    /// Every line serve logged so far (its JSON log on stderr).
    lines: Arc<Mutex<Vec<String>>>,
    /// The lines as they come, for waits on what serve says.
    incoming: mpsc::Receiver<String>,
    /// Reads serve's stderr until serve exits.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Node {
    /// A failing test must not leave a server behind (after a graceful stop
    /// this finds the process gone and does nothing), and shows what serve
    /// logged last.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // Serve is gone, so its stderr ends: every line it wrote is read.
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
            let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("--- the last lines agentlog serve logged ---");
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs `work`, failing the test if it takes longer than `limit`: a hang
/// becomes a failure that names what hung.
pub async fn within<F: Future>(limit: Duration, what: &str, work: F) -> F::Output {
    match tokio::time::timeout(limit, work).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {} s", limit.as_secs()),
    }
}

pub fn start(server: &NatsServer, data: &Path) -> Node {
    start_with(&server.url(), data, &[])
}

/// A string field of one JSON log line (`"name":"value"`).
pub fn field(line: &str, name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("fields")?.get(name)?.as_str().map(str::to_owned)
}

/// Starts `agentlog serve` against `url` with extra flags, on a port the
/// node picks, and waits (up to 60 s) for its own word that it is ready:
/// the `ready` line of its log. Its HTTP address comes from the `node
/// started` line.
pub fn start_with(url: &str, data: &Path, extra: &[&str]) -> Node {
    start_with_env(url, data, extra, &[])
}

/// [`start_with`], with environment variables (`AGENTLOG_*` configuration).
/// Unless they set `AGENTLOG_AUTH_MODE`, the node runs in open mode: these
/// tests are about other things than signing (tests/signed.rs is about it).
pub fn start_with_env(url: &str, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let open = (!env.iter().any(|(name, _)| *name == "AGENTLOG_AUTH_MODE")).then_some(("AGENTLOG_AUTH_MODE", "open"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["serve", "--nats", url, "--http", "127.0.0.1:0"])
        .args(extra)
        .envs(open)
        .envs(env.iter().copied())
        .arg("--data")
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentlog serve");
    let stderr = child.stderr.take().expect("serve's stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, incoming) = mpsc::channel();
    let reader = std::thread::spawn({
        let lines = lines.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                let _ = tx.send(line);
            }
        }
    });
    let mut node = Node { child, http: 0, lines, incoming, reader: Some(reader) };
    let (mut ready, mut http) = (false, None);
    node.wait_for_log(Duration::from_secs(60), "serve to be ready", |line| {
        if field(line, "message").as_deref() == Some("node started") {
            http = field(line, "http");
        }
        ready |= field(line, "message").as_deref() == Some("ready");
        ready && http.is_some()
    });
    let http = http.expect("the node started line names its address");
    node.http = http.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("a port in the http address");
    node
}

impl Node {
    /// Reads serve's log as it comes until `found` says so, failing the
    /// test after `limit` or when serve exits first. Returns the line.
    #[allow(clippy::disallowed_methods)] // test scaffolding: a wall-time bound
    pub fn wait_for_log(&mut self, limit: Duration, what: &str, mut found: impl FnMut(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(line) if found(&line) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("waited {} s for {what}", limit.as_secs()),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("serve exited while waiting for {what}"),
            }
        }
    }

    /// Waits up to `limit` for serve to exit, and gives its status. The
    /// signal is its stderr closing (the reader sees the end of it) when
    /// the process ends.
    #[allow(clippy::disallowed_methods)] // test scaffolding: a wall-time bound
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.child.wait().unwrap(),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("agentlog serve did not exit within {} s", limit.as_secs())
                }
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: a graceful stop must exit with success, within
    /// 60 s.
    pub fn terminate(&mut self) {
        self.signal("-TERM");
        let exit = self.exit_within(Duration::from_secs(60));
        assert!(exit.success(), "a graceful exit on SIGTERM, not {exit}");
    }
}

pub fn metric(node: &Node, name: &str) -> u64 {
    let (_, metrics) = get(node.http, "/metrics").expect("metrics");
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}
