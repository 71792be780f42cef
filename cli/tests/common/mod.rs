//! Running `agentlog serve` from tests: start it on a free HTTP port, wait
//! until it is ready, read its metrics, reap it on every path. Every wait is
//! bounded, so a stuck service fails the test instead of hanging the suite,
//! and a failing test prints the end of serve's log.
#![allow(dead_code)]
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use agentlog_tests::nats::NatsServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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
    /// serve's stderr (its JSON log).
    log: tempfile::NamedTempFile,
}

impl Drop for Node {
    /// A failing test must not leave a server behind (after a graceful stop
    /// this finds the process gone and does nothing), and shows what serve
    /// logged last.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
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

/// Starts `agentlog serve` against `url` with extra flags, and waits (up to
/// 30 s) until it is ready.
pub fn start_with(url: &str, data: &Path, extra: &[&str]) -> Node {
    let http = free_port();
    let log = tempfile::NamedTempFile::new().expect("a file for serve's log");
    let child = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["serve", "--nats", url, "--http", &format!("127.0.0.1:{http}")])
        .args(extra)
        .arg("--data")
        .arg(data)
        .stderr(log.reopen().expect("serve's log"))
        .spawn()
        .expect("start agentlog serve");
    let node = Node { child, http, log };
    for _ in 0..600 {
        if get(http, "/ready").is_some_and(|(status, _)| status == 200) {
            return node;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("agentlog serve was not ready within 30 s");
}

impl Node {
    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: a graceful stop must exit with success, within
    /// 60 s.
    pub fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        for _ in 0..1200 {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "a graceful exit on SIGTERM, not {exit}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agentlog serve did not exit within 60 s of SIGTERM");
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
