//! The requests to stop that the system delivers to a run, per system: on unix SIGINT (Ctrl-C),
//! and SIGTERM where asked (`watch`: a service manager's stop); on Windows Ctrl-C, Ctrl-Break,
//! the console window being closed, and log-off or shut-down (a service's or Task Scheduler's
//! stop reaches a console program as one of these). SIGHUP (re-read the configuration) has no
//! Windows counterpart.

/// A source of stop requests, installed when made (requests before that are not seen).
pub(crate) struct Stop {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(windows)]
    c: Option<tokio::signal::windows::CtrlC>,
    #[cfg(windows)]
    brk: Option<tokio::signal::windows::CtrlBreak>,
    #[cfg(windows)]
    close: Option<tokio::signal::windows::CtrlClose>,
    #[cfg(windows)]
    shutdown: Option<tokio::signal::windows::CtrlShutdown>,
    #[cfg(windows)]
    logoff: Option<tokio::signal::windows::CtrlLogoff>,
}

/// Awaits `f` when there is one (`None`, which disables its `select!` branch, when not).
async fn maybe(f: Option<impl Future<Output = Option<()>>>) -> Option<()> {
    f?.await
}

impl Stop {
    /// Listens for Ctrl-C and its Windows kin; with `term`, for SIGTERM too (unix).
    pub(crate) fn new(term: bool) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Stop {
                int: signal(SignalKind::interrupt()).ok(),
                term: if term { signal(SignalKind::terminate()).ok() } else { None },
            }
        }
        #[cfg(windows)]
        {
            let _ = term;
            use tokio::signal::windows;
            Stop {
                c: windows::ctrl_c().ok(),
                brk: windows::ctrl_break().ok(),
                close: windows::ctrl_close().ok(),
                shutdown: windows::ctrl_shutdown().ok(),
                logoff: windows::ctrl_logoff().ok(),
            }
        }
    }

    /// The next stop request; `false` when none can come (no handler could be installed).
    pub(crate) async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = maybe(self.int.as_mut().map(|s| s.recv())) => true,
                Some(()) = maybe(self.term.as_mut().map(|s| s.recv())) => true,
                else => false,
            }
        }
        #[cfg(windows)]
        {
            tokio::select! {
                Some(()) = maybe(self.c.as_mut().map(|s| s.recv())) => true,
                Some(()) = maybe(self.brk.as_mut().map(|s| s.recv())) => true,
                Some(()) = maybe(self.close.as_mut().map(|s| s.recv())) => true,
                Some(()) = maybe(self.shutdown.as_mut().map(|s| s.recv())) => true,
                Some(()) = maybe(self.logoff.as_mut().map(|s| s.recv())) => true,
                else => false,
            }
        }
    }
}
