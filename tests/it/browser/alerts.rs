//! The Alerts view (`#/alerts`) in the real Chromium against the real `pipewatch serve`: a
//! failing run's alert listed as sent, the destinations as the server describes them (a
//! webhook shown without its path), and each destination's Test button delivering a test
//! alert and saying how it went.

use std::time::Duration;

use serde_json::json;

use super::{Browser, rt, serial, tools};
use crate::alerts::Sink;
use crate::support::{Project, Server, free_port, stderr};

#[test]
fn the_alerts_view_lists_a_sent_alert_and_tests_each_destination() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let sink = Sink::start();
        let closed = free_port();
        let p = Project::with_config(&format!(
            "[[stages]]\nname = \"a\"\nrun = [\"sh\", \"-c\", \"echo boom >&2; exit 1\"]\n\n\
             [[alerts]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:{}/hook/secret-token\"\n\n\
             [[alerts]]\nname = \"down\"\non = [\"failure\"]\nwebhook = \"http://127.0.0.1:{closed}/\"\n",
            sink.port
        ));
        let server = Server::start(&p);
        let out = p.run(&["run"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let got = sink.wait_for(1, "the failure alert");
        let run_id = got[0].body["run_id"].as_str().expect("run id").to_string();

        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/#/alerts", server.url())).await;
        b.wait("the alerts view", Duration::from_secs(10), "!document.querySelector('#view-alerts').hidden && document.querySelector('#nav-alerts').getAttribute('aria-current') === 'page'").await;
        let row = "#al-rows tr[data-status='sent']";
        b.wait("the alert listed as sent", Duration::from_secs(15), &format!("document.querySelector({})", json!(row))).await;
        let cells = b.js(&format!("return [...document.querySelector({}).cells].map(c => c.textContent)", json!(row))).await;
        assert_eq!(cells[1], "failure", "{cells}");
        assert_eq!(cells[2], "p", "{cells}");
        assert_eq!(cells[3], run_id.as_str(), "{cells}");
        assert_eq!(cells[4], "ops", "{cells}");
        assert_eq!(cells[5], "sent", "{cells}");
        assert_eq!(cells[6], "1", "{cells}");
        // The run link opens the run.
        let href = b.js(&format!("return document.querySelector({} + ' a').getAttribute('href')", json!(row))).await;
        assert_eq!(href, format!("#/runs/{run_id}"));

        // The destinations, as the server describes them: the webhook's path is not shown.
        let ops = "#al-dests .dest[data-destination='ops']";
        b.wait("the destinations", Duration::from_secs(10), &format!("document.querySelector({})", json!(ops))).await;
        let text = b.js(&format!("return document.querySelector({}).textContent", json!(ops))).await;
        let text = text.as_str().expect("text");
        assert!(text.contains("webhook") && text.contains(&format!("127.0.0.1:{}", sink.port)), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("1 sent"), "{text}");
        assert!(text.contains("failure, recovery, missed, abandoned"), "{text}");

        // Test: delivered to the sink, and the page says so.
        b.click(&format!("{ops} button.test")).await;
        b.wait("the test's outcome", Duration::from_secs(15), &format!("document.querySelector({})?.textContent.includes('delivered')", json!(format!("{ops} .test-outcome.ok")))).await;
        let got = sink.wait_for(2, "the test alert");
        assert_eq!(got[1].body["kind"], "test", "{:#}", got[1].body);
        assert_eq!(got[1].path, "/hook/secret-token");

        // A destination that cannot be reached: the page says why.
        let down = "#al-dests .dest[data-destination='down']";
        b.click(&format!("{down} button.test")).await;
        let said = b.wait("the failed test's outcome", Duration::from_secs(20), &format!("document.querySelector({})?.textContent", json!(format!("{down} .test-outcome.error")))).await;
        assert!(said.as_str().unwrap_or("").contains("not delivered"), "{said}");

        b.screenshot("alerts", None).await;

        // Back to the runs.
        b.click("#nav-runs").await;
        b.wait("the runs view", Duration::from_secs(10), "!document.querySelector('#view-home').hidden && document.querySelector('#view-alerts').hidden").await;
        let errors = b.console_errors().await;
        // The failed test is a 502 the page asked for and explained: the browser logs the
        // failed request itself, which is not an error of the page.
        let errors: Vec<&String> = errors.iter().filter(|e| !e.contains("/api/alerts/down/test")).collect();
        assert!(errors.is_empty(), "the browser logged errors:\n{errors:?}");
        b.close().await;
    });
}
