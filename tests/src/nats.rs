//! A real nats-server for tests: started on a free loopback port with a
//! temporary JetStream store, stopped (SIGKILL) when dropped. A missing
//! server binary is a failure, never a skip: `./scripts/setup.sh` installs
//! the pinned version.
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let found = Command::new("sh").args(["-c", "command -v nats-server"]).output().expect("run sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        found.status.success() && !path.is_empty(),
        "nats-server is not installed: run ./scripts/setup.sh (or set NATS_SERVER to its path)"
    );
    PathBuf::from(path)
}

impl NatsServer {
    /// Starts a JetStream-enabled server and waits until it accepts
    /// connections (at most 20 s of wall time: this is test scaffolding).
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("a temporary JetStream store");
        let port = free_port();
        let child = Command::new(binary())
            .args(["--jetstream", "--addr", "127.0.0.1", "--port", &port.to_string()])
            .arg("--store_dir")
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let server = NatsServer { child, port, _store: store };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on port {port} within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
