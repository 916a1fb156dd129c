//! What the broker-facing programs share around the library: loading the
//! config with the one error format, logging to stderr, and turning
//! SIGINT/SIGTERM into a shutdown signal. It never touches data.

use std::path::Path;
use std::time::Duration;

use crate::cli;
use crate::config::{self, RabbitConfig};
use crate::shutdown::Shutdown;

/// The publisher's flags, shared by tstat-rabbit and tstat_send.
#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    /// Most unconfirmed messages in flight.
    #[arg(long, value_name = "N", default_value = "256")]
    pub window: std::num::NonZeroUsize,
    /// Reconnect-and-resend rounds after a failure before giving up.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Seconds allowed to connect to one host (TCP, TLS, AMQP login).
    #[arg(long, value_name = "S", default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,
    /// Seconds to wait for a confirm, and for a broker that blocks publishers.
    #[arg(long, value_name = "S", default_value = "30", value_parser = seconds)]
    pub confirm_timeout: Duration,
    /// AMQP heartbeat interval in whole seconds (0: off).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub heartbeat: u16,
}

impl PublishArgs {
    /// The publisher options these flags give; notices go to stderr.
    pub fn options(&self, prog: &'static str, verbose: bool) -> crate::publish::PublishOptions {
        crate::publish::PublishOptions {
            window: self.window,
            retries: self.retries,
            connect_timeout: self.connect_timeout,
            confirm_timeout: self.confirm_timeout,
            heartbeat: Duration::from_secs(u64::from(self.heartbeat)),
            notices: Some(print_notices(prog, verbose)),
            ..crate::publish::PublishOptions::default()
        }
    }
}

/// The single-threaded async runtime the broker-facing programs run on;
/// `Err` when it cannot start (reported, exit 1).
pub fn async_runtime(prog: &str) -> Result<tokio::runtime::Runtime, cli::Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            cli::error(prog, format!("cannot start the async runtime: {e}"));
            cli::Exit::Failure
        })
}

/// A positive number of seconds, fractions allowed (`0.5`).
pub fn seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e7 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "expected a positive number of seconds, e.g. 10 or 0.5, got '{s}'"
        )),
    }
}

/// Loads and validates `config.ini`, printing every problem as
/// `prog: error: FILE: [section] key: problem` and every warning; `Err` holds
/// exit status 2.
pub fn load_config(
    prog: &str,
    path: &Path,
    verbose: bool,
) -> Result<RabbitConfig, std::process::ExitCode> {
    let checked = match config::load_with_env(path, &config::process_env) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                cli::error(prog, line);
            }
            return Err(cli::Exit::Usage.into());
        }
    };
    for w in &checked.warnings {
        cli::warning(prog, w);
    }
    for w in crate::publish::config_warnings(&checked.config) {
        cli::warning(prog, w);
    }
    if verbose {
        eprintln!(
            "{prog}: config {}:\n{}",
            path.display(),
            checked.config.describe()
        );
    }
    Ok(checked.config)
}

/// Sends tracing output to stderr: warnings by default, `info` with
/// `verbose`, `debug` with `debug`; `RUST_LOG` overrides, except that no
/// other crate's `trace` events are ever written: the AMQP library logs
/// its frames there, the login frame with the password included.
pub fn init_logging(prog: &'static str, verbose: bool, debug: bool) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default = if debug {
        "tstat_transport=debug,lapin=info,amq_protocol=off"
    } else if verbose {
        "tstat_transport=info,lapin=off,amq_protocol=off"
    } else {
        "tstat_transport=warn,lapin=off,amq_protocol=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let safe =
        || tracing_subscriber::filter::filter_fn(|meta| not_secret(meta.target(), *meta.level()));
    // -D (or RUST_LOG): timestamps, levels and modules for debugging; else
    // lines like the program's own (`tstat_send: …`).
    let detailed = debug || std::env::var_os("RUST_LOG").is_some();
    let full = detailed.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(safe())
    });
    let plain = (!detailed).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(|| LineWriter(Vec::new()))
            .event_format(PlainLine(prog))
            .with_filter(safe())
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(full)
        .with(plain)
        .try_init();
}

/// Collects one formatted event and prints it with [`cli::print_line`], so
/// it goes above a progress bar.
struct LineWriter(Vec<u8>);

impl std::io::Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            cli::print_line(text);
        }
    }
}

/// Formats an event as `prog: message` (`prog: warning: message` for
/// warnings), the shape of every other line the programs print.
struct PlainLine(&'static str);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(w, "{}: ", self.0)?;
        match *event.metadata().level() {
            tracing::Level::ERROR => write!(w, "error: ")?,
            tracing::Level::WARN => write!(w, "warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// False for the events that may carry credentials: `trace` from anything
/// but this crate (lapin and amq-protocol dump whole frames there, the
/// connection's login among them). An allow-list, so a new dependency that
/// logs its I/O at `trace` is covered too.
fn not_secret(target: &str, level: tracing::Level) -> bool {
    level != tracing::Level::TRACE || target.starts_with("tstat_")
}

/// Turns the first SIGINT/SIGTERM into a triggered `shutdown` and returns
/// the exit status that goes with it (130/143); a second signal exits at
/// once.
pub async fn watch_signals(prog: &'static str, shutdown: Shutdown) -> Option<cli::Exit> {
    watch_signals_saying(
        prog,
        shutdown,
        "stopping: waiting for outstanding confirms (signal again to quit at once)",
    )
    .await
}

/// [`watch_signals`] with the program's own words for what stopping means.
pub async fn watch_signals_saying(
    prog: &'static str,
    shutdown: Shutdown,
    stopping: &'static str,
) -> Option<cli::Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return None;
    };
    let code = tokio::select! {
        _ = int.recv() => cli::Exit::Interrupted,
        _ = term.recv() => cli::Exit::Terminated,
    };
    cli::warning(prog, stopping);
    shutdown.trigger();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => std::process::exit(i32::from(cli::Exit::Interrupted.code())),
            _ = term.recv() => std::process::exit(i32::from(cli::Exit::Terminated.code())),
        }
    });
    Some(code)
}

/// Prints the publisher's notices on stderr: connections only when
/// `verbose`, everything else (failover, retries, a blocked broker) always.
pub fn print_notices(prog: &'static str, verbose: bool) -> crate::publish::NoticeSink {
    use crate::publish::Notice;
    std::sync::Arc::new(move |n: &Notice| match n {
        Notice::Connected { .. } => {
            if verbose {
                eprintln!("{prog}: {n}");
            }
        }
        _ => cli::warning(prog, n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn foreign_trace_events_are_dropped() {
        assert!(!not_secret("lapin::io_loop", Level::TRACE));
        assert!(!not_secret("amq_protocol::frame", Level::TRACE));
        assert!(!not_secret("rustls::client", Level::TRACE));
        assert!(not_secret("lapin::channels", Level::DEBUG));
        assert!(not_secret("tstat_transport::publish", Level::TRACE));
        assert!(not_secret("tstat_rabbit", Level::TRACE));
    }
}
