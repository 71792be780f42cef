//! Running `agentlog serve` from tests: start it on a free HTTP port, wait
//! until it is ready, read its metrics, reap it on every path.
#![allow(dead_code)]
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentlog_tests::nats::NatsServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()))
}

pub struct Node {
    child: Child,
    pub http: u16,
}

impl Drop for Node {
    /// A failing test must not leave a server behind (after a graceful stop
    /// this finds the process gone and does nothing).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(server: &NatsServer, data: &Path) -> Node {
    start_with(&server.url(), data, &[])
}

/// Starts `agentlog serve` against `url` with extra flags, and waits (up to
/// 30 s) until it is ready.
pub fn start_with(url: &str, data: &Path, extra: &[&str]) -> Node {
    let http = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["serve", "--nats", url, "--http", &format!("127.0.0.1:{http}")])
        .args(extra)
        .arg("--data")
        .arg(data)
        .stderr(Stdio::null())
        .spawn()
        .expect("start agentlog serve");
    let node = Node { child, http };
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

    /// SIGTERM and wait: a graceful stop must exit with success.
    pub fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success(), "a graceful exit on SIGTERM");
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
