//! Turning the OS's "please stop" into one future: Ctrl-C and SIGTERM (and SIGHUP) on Unix,
//! Ctrl-C, Ctrl-Break and console close on Windows.

/// Resolves with the signal's name when the process is asked to stop. If a signal handler
/// cannot be installed, that signal is simply not waited for.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives in between (while `serve` rebuilds its index, say) is then waited for
/// like any other, instead of ending the process outright. Call it inside the runtime.
pub fn signalled() -> impl std::future::Future<Output = &'static str> + Send {
    imp::signalled()
}

#[cfg(unix)]
mod imp {
    use tokio::signal::unix::{SignalKind, signal};

    pub fn signalled() -> impl std::future::Future<Output = &'static str> + Send {
        let (int, term, hup) = (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::hangup()).ok(),
        );
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! {
                _ = wait(int) => "SIGINT",
                _ = wait(term) => "SIGTERM",
                _ = wait(hup) => "SIGHUP",
            }
        }
    }
}

#[cfg(windows)]
mod imp {
    use std::future::pending;
    use tokio::signal::windows;

    pub fn signalled() -> impl std::future::Future<Output = &'static str> + Send {
        let (c, b, x) = (
            windows::ctrl_c().ok(),
            windows::ctrl_break().ok(),
            windows::ctrl_close().ok(),
        );
        async move {
            let ctrl_c = async move {
                match c {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => pending::<()>().await,
                }
            };
            let ctrl_break = async move {
                match b {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => pending::<()>().await,
                }
            };
            let ctrl_close = async move {
                match x {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => pending::<()>().await,
                }
            };
            tokio::select! {
                _ = ctrl_c => "Ctrl-C",
                _ = ctrl_break => "Ctrl-Break",
                _ = ctrl_close => "console close",
            }
        }
    }
}
