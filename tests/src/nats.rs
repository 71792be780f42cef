//! A real nats-server for tests and benchmarks: started on a free loopback
//! port with a temporary JetStream store, stopped (SIGKILL) when dropped. A missing
//! server binary is a failure, never a skip: `./scripts/setup.sh` installs
//! the pinned version.
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    port: u16,
    config: PathBuf,
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
    pub fn start() -> NatsServer {
        NatsServer::start_with("")
    }

    /// Starts a server whose configuration file also holds `extra` (an
    /// `authorization { ... }` block, say).
    pub fn start_with(extra: &str) -> NatsServer {
        NatsServer::start_in(None, extra)
    }

    /// Starts a server whose JetStream store is a temporary directory inside
    /// `dir` (the disk to measure, for benchmarks), or the system's
    /// temporary directory.
    #[allow(clippy::disallowed_methods)]
    pub fn start_in(dir: Option<&std::path::Path>, extra: &str) -> NatsServer {
        let store = match dir {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .expect("a temporary JetStream store");
        let port = free_port();
        let config = store.path().join("server.conf");
        let store_dir = store.path().join("jetstream");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n{extra}\n",
                store_dir.display().to_string()
            ),
        )
        .expect("write the server's configuration");
        let child = spawn(&config);
        let server = NatsServer { child, port, config, _store: store };
        server.wait_until_listening();
        server
    }

    #[allow(clippy::disallowed_methods)]
    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on port {} within 20 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.config);
        self.wait_until_listening();
    }

    /// The server's process id (for reading its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The URL with a user's credentials in it.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }
}

fn spawn(config: &std::path::Path) -> Child {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JetStream cluster of real nats-servers on loopback (each with its own
/// client port, route port and store), for replicated (R3) streams.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(size: usize) -> NatsCluster {
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
        let nodes = (0..size)
            .map(|i| {
                NatsServer::start_with(&format!(
                    "server_name: n{i}\ncluster {{ name: agentlog, listen: 127.0.0.1:{}, routes: [{}] }}",
                    routes[i],
                    route_urls.join(", ")
                ))
            })
            .collect();
        NatsCluster { nodes }
    }
}
