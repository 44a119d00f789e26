//! Arbitrary cron expressions through the parser and every translation: never a panic; what
//! the parser accepts either translates or is refused with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipewatch::config::schedule::Schedule;
use pipewatch::scheduler::{cron, systemd, windows};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > 200 {
        return;
    }
    let Ok(schedule) = text.parse::<Schedule>() else {
        return;
    };
    let _ = schedule.next_after(&chrono::Utc::now());
    let expr = schedule.expression();
    if let Ok(lines) = systemd::on_calendar(expr) {
        assert!(!lines.is_empty());
    }
    if let Ok(triggers) = windows::triggers(expr) {
        assert!(!triggers.is_empty());
    }
    let _ = cron::cron_schedule(expr);
});
