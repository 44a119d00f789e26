//! Turning the OS's "please stop" into one future: Ctrl-C and SIGTERM (and SIGHUP) on Unix,
//! Ctrl-C, Ctrl-Break and console close on Windows.

/// Resolves with the signal's name when the process is asked to stop. If a signal handler
/// cannot be installed, that signal is simply not waited for.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives in between (while `serve` rebuilds its index, say) is then waited for
/// like any other, instead of ending the process outright. Call it inside the runtime.
pub fn signalled() -> impl std::future::Future<Output = &'static str> + Send {
    imp::signalled(true)
}

/// Like [`signalled`], without SIGHUP: the dashboard takes that as "read the configuration
/// again" ([`Hangups`]), as daemons do.
pub fn stop_signalled() -> impl std::future::Future<Output = &'static str> + Send {
    imp::signalled(false)
}

/// SIGHUP, one after another, from the moment this is made (so one sent before the first
/// [`Hangups::next`] is not lost, nor ends the process). Never on Windows, which has none.
pub struct Hangups(imp::Hangups);

impl Hangups {
    pub fn new() -> Hangups {
        Hangups(imp::Hangups::new())
    }

    /// Resolves at the next SIGHUP.
    pub async fn next(&mut self) {
        self.0.next().await
    }
}

impl Default for Hangups {
    fn default() -> Hangups {
        Hangups::new()
    }
}

#[cfg(unix)]
mod imp {
    use tokio::signal::unix::{SignalKind, signal};

    pub struct Hangups(Option<tokio::signal::unix::Signal>);

    impl Hangups {
        pub fn new() -> Hangups {
            Hangups(signal(SignalKind::hangup()).ok())
        }

        pub async fn next(&mut self) {
            match &mut self.0 {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    pub fn signalled(hangup: bool) -> impl std::future::Future<Output = &'static str> + Send {
        let (int, term, hup) = (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
            hangup.then(|| signal(SignalKind::hangup()).ok()).flatten(),
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

    pub struct Hangups;

    impl Hangups {
        pub fn new() -> Hangups {
            Hangups
        }

        pub async fn next(&mut self) {
            pending::<()>().await
        }
    }

    /// Windows has no SIGHUP: `hangup` changes nothing.
    pub fn signalled(_hangup: bool) -> impl std::future::Future<Output = &'static str> + Send {
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
