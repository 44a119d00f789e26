//! Turning the OS's "please stop" into one future: Ctrl-C and SIGTERM (and SIGHUP) on Unix,
//! Ctrl-C, Ctrl-Break and console close on Windows.

/// Resolves with the signal's name when the process is asked to stop. If a signal handler
/// cannot be installed, that signal is simply not waited for.
pub async fn signalled() -> &'static str {
    imp::signalled().await
}

#[cfg(unix)]
mod imp {
    use tokio::signal::unix::{SignalKind, signal};

    pub async fn signalled() -> &'static str {
        let wait = |kind: SignalKind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(SignalKind::interrupt()) => "SIGINT",
            _ = wait(SignalKind::terminate()) => "SIGTERM",
            _ = wait(SignalKind::hangup()) => "SIGHUP",
        }
    }
}

#[cfg(windows)]
mod imp {
    use std::future::pending;
    use tokio::signal::windows;

    pub async fn signalled() -> &'static str {
        let ctrl_c = async {
            match windows::ctrl_c() {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => pending::<()>().await,
            }
        };
        let ctrl_break = async {
            match windows::ctrl_break() {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => pending::<()>().await,
            }
        };
        let ctrl_close = async {
            match windows::ctrl_close() {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => "Ctrl-C",
            _ = ctrl_break => "Ctrl-Break",
            _ = ctrl_close => "console close",
        }
    }
}
