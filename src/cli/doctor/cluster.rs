//! The `cluster` check: with `[cluster]`, the NATS servers answer, JetStream is on, and the
//! events stream is there (or will be created by the first run).

use super::Check;
use crate::cluster::{Engine, STREAM};
use crate::config::Cluster;

const CHECK: &str = "cluster";

/// Connects to `[cluster] nats` and reads the events stream; one check.
pub(super) fn check(cluster: &Cluster, file: &std::path::Path) -> Check {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Check::skip(CHECK, format!("not checked: no runtime: {e}")),
    };
    let fix = format!(
        "start the NATS servers of [cluster] nats in {} (JetStream on: `nats-server -js`), or \
         fix the list; docs/scale-out.md",
        file.display()
    );
    rt.block_on(async {
        let engine = match Engine::connect(cluster).await {
            Ok(e) => e,
            Err(e) => return Check::fail(CHECK, e.to_string(), fix),
        };
        let servers = engine.client.server_info();
        if let Err(e) = engine.js.query_account().await {
            return Check::fail(
                CHECK,
                format!("NATS {} answers, but JetStream does not: {e}", servers.host),
                fix,
            );
        }
        match engine.js.get_stream(STREAM).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => Check::pass(
                    CHECK,
                    format!(
                        "NATS {} (server {}), JetStream on; stream {STREAM}: {} events, {} \
                         replica{}; this host is {:?}",
                        servers.version,
                        servers.server_name,
                        info.state.messages,
                        info.config.num_replicas,
                        if info.config.num_replicas == 1 {
                            ""
                        } else {
                            "s"
                        },
                        cluster.host
                    ),
                ),
                Err(e) => Check::fail(CHECK, format!("cannot read stream {STREAM}: {e}"), fix),
            },
            Err(_) => Check::pass(
                CHECK,
                format!(
                    "NATS {} (server {}), JetStream on; stream {STREAM} not created yet (the \
                     first run or serve creates it); this host is {:?}",
                    servers.version, servers.server_name, cluster.host
                ),
            ),
        }
    })
}
