//! `[cluster]` over NATS JetStream (`docs/scale-out.md`): real `nats-server` processes on
//! 127.0.0.1 (`support::nats`), one server or a cluster of three.

use pipewatch::cluster::{Engine, STREAM, StreamLimits};
use pipewatch::config::Cluster;

use crate::support::nats::Nats;

fn engine_config(nats: &Nats, host: &str) -> Cluster {
    Cluster {
        nats: nats.urls(),
        host: host.to_string(),
        credentials: None,
        replicas: nats.nodes.len(),
        max_bytes: None,
    }
}

#[test]
fn the_stream_and_buckets_are_created_with_their_settings_on_three_servers() {
    let Some(nats) = Nats::cluster() else { return };
    let cfg = engine_config(&nats, "etl-01");
    let (replicas, subjects, dup, limits) = nats.with_client(|_| async move {
        let engine = Engine::connect(&cfg).await.expect("connect");
        let limits = StreamLimits {
            max_age: std::time::Duration::from_secs(86_400),
            max_bytes: -1,
        };
        engine.ensure_stream(limits).await.expect("stream");
        // A second start finds it as it is; one with other limits brings it to them.
        engine.ensure_stream(limits).await.expect("stream again");
        let mut s = engine
            .ensure_stream(StreamLimits {
                max_bytes: 64 << 20,
                ..limits
            })
            .await
            .expect("stream with a size limit");
        engine.claims().await.expect("claims bucket");
        engine.locks().await.expect("locks bucket");
        let info = s.info().await.expect("info");
        (
            info.config.num_replicas,
            info.config.subjects.clone(),
            info.config.duplicate_window,
            (info.config.max_age, info.config.max_bytes),
        )
    });
    assert_eq!(replicas, 3);
    assert_eq!(subjects, vec!["pipewatch.events.>".to_string()]);
    assert!(dup >= std::time::Duration::from_secs(3600));
    assert_eq!(limits, (std::time::Duration::from_secs(86_400), 64 << 20));
    assert!(nats.stream_leader(STREAM).is_some());
}

#[test]
fn an_unreachable_engine_is_named_within_the_connect_timeout() {
    let port = crate::support::free_port();
    let cfg = Cluster {
        nats: vec![format!("nats://127.0.0.1:{port}")],
        host: "etl-01".into(),
        credentials: None,
        replicas: 1,
        max_bytes: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let err = rt
        .block_on(Engine::connect(&cfg))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

fn doctor_cluster(p: &crate::support::Project) -> serde_json::Value {
    let o = p.run(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&o.stdout).expect("doctor's JSON");
    crate::support::doctor_check(&checks, "cluster").clone()
}

#[test]
fn doctor_says_whether_the_engine_answers() {
    let stage = "\n[[stages]]\nname = \"a\"\nrun = [\"true\"]\n";
    let port = crate::support::free_port();
    let p = crate::support::Project::with_config(&format!(
        "{stage}\n[cluster]\nnats = [\"nats://127.0.0.1:{port}\"]\nhost = \"etl-01\"\n"
    ));
    let c = doctor_cluster(&p);
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("127.0.0.1:{port}")),
        "{c}"
    );
    assert!(
        c["fix"].as_str().unwrap_or("").contains("[cluster] nats"),
        "{c}"
    );

    let Some(nats) = Nats::single() else { return };
    let p =
        crate::support::Project::with_config(&format!("{stage}\n{}", nats.cluster_toml("etl-01")));
    let c = doctor_cluster(&p);
    assert_eq!(c["ok"], true, "{c}");
    assert!(
        c["detail"].as_str().unwrap_or("").contains("JetStream on"),
        "{c}"
    );
}
