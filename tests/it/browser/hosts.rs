//! Runs from several hosts (`[cluster]`): the runs list has a Host column only once its runs
//! come from more than one host, and a run's header names its host.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::{Browser, QUIET, rt, serial, tools};
use crate::cluster_host::hosted_run;
use crate::support::{Project, QUICK, Server};

/// The host cell of each row, by run id (`None` for a row without one).
async fn host_cells(b: &Browser) -> serde_json::Value {
    b.js("return Object.fromEntries([...document.querySelectorAll('#runs li.run')].map(li => [li.dataset.runId, li.querySelector('.host-name')?.textContent ?? null]))")
        .await
}

/// Two runs of one host: the list is as a single machine's. A run of a second host arrives
/// live: the Host column appears, aligned under its heading, each row with its host; the run's
/// page names its host in the header.
#[test]
fn the_host_column_shows_with_two_hosts_and_not_with_one() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!("{QUIET}{QUICK}"));
        let t0 = Utc::now() - chrono::Duration::minutes(20);
        let at = |m: i64| t0 + chrono::Duration::minutes(m);
        hosted_run(&p.events_dir(), "h1-etl01", at(0), "success", Some("etl-01"), None);
        hosted_run(&p.events_dir(), "h2-etl01", at(1), "failure", Some("etl-01"), Some("box"));
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait("two runs", Duration::from_secs(15), "document.querySelectorAll('#runs li.run').length === 2").await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        assert_eq!(b.js("return document.querySelector('#runs-host-col').hidden").await, true);
        assert_eq!(b.js("return document.querySelector('#runs-card').classList.contains('with-hosts')").await, false);
        assert_eq!(host_cells(&b).await, json!({ "h1-etl01": null, "h2-etl01": null }));

        // A run forwarded by a second host.
        hosted_run(&p.events_dir(), "h3-etl02", at(2), "success", Some("etl-02"), None);
        b.wait("the third run", Duration::from_secs(10), "document.querySelectorAll('#runs li.run').length === 3").await;
        b.wait("the Host column", Duration::from_secs(5), "!document.querySelector('#runs-host-col').hidden").await;
        assert_eq!(
            host_cells(&b).await,
            json!({ "h1-etl01": "etl-01", "h2-etl01": "etl-01", "h3-etl02": "etl-02" })
        );
        // The cells sit under their heading, and the columns after them under theirs.
        let aligned = b
            .js("const x = (el) => Math.round(el.getBoundingClientRect().left); \
                 const heads = [...document.querySelectorAll('.runs-head > span')].filter(s => !s.hidden); \
                 const row = document.querySelector('#runs li.run'); \
                 const cells = [row.querySelector('.st'), row.querySelector('.id'), row.querySelector('.host-name'), row.querySelector('.trig'), row.querySelector('.start'), row.querySelector('.dur')]; \
                 return cells.map((c, i) => Math.abs(x(c) - x(heads[i])) <= 2);")
            .await;
        assert_eq!(aligned, json!([true, true, true, true, true, true]));

        // The run's header names its host.
        b.goto(&format!("{}/#/runs/h3-etl02", server.url())).await;
        b.wait("the run's host", Duration::from_secs(10), "document.querySelector('#rv-host')?.textContent === 'etl-02'").await;
        let facts = b.js("return document.querySelector('#rv-facts').textContent").await;
        assert!(facts.as_str().unwrap_or_default().contains("Hostetl-02"), "{facts}");
        b.close().await;
    });
}
