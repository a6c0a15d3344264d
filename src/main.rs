//! The `flamepipe` binary: command line, config loading, and running the pipelines.
//!
//! Exit codes: 0 success; 2 a bad config or command line; 1 a failure while running
//! (a port taken, a component failing, shutdown overrunning `service.shutdown_timeout`).
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap).
//! - [`config`]: loading and checking `pipeline.yaml`.
//! - [`registry`]: every component type, in one list.
//! - [`topology`]: building, running and shutting down the pipelines.
//! - [`server`]: the HTTP servers components mount routes on, and the telemetry server.
//! - [`blocks_cmd`]: `flamepipe blocks ls|dump|verify`.
//! - [`upload_cmd`]: `flamepipe upload`.
//! - [`logging`]: tracing setup.

mod blocks_cmd;
mod cli;
mod config;
mod logging;
mod registry;
mod server;
mod topology;
mod upload_cmd;

#[cfg(test)]
mod testing;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info, warn};

use crate::cli::{BlocksCommand, Cli, Command};

/// Why the process stops with a non-zero code.
enum Failure {
    /// Exit 2: the user has to change the config or the command line.
    Usage,
    /// Exit 1: something failed at run time.
    Runtime(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run(cli::ConfigArg {
        config: "pipeline.yaml".into(),
    })) {
        Command::Run(arg) => run(&arg.config),
        Command::Validate(args) => validate(&args.path()),
        Command::Compact(arg) => compact(&arg.config),
        Command::Blocks(command) => blocks(command),
        Command::Upload(args) => upload(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage) => ExitCode::from(2),
        Err(Failure::Runtime(e)) => {
            // Logged once logging is up (`run`); printed plainly before that and for `blocks`.
            if tracing::dispatcher::has_been_set() {
                error!(error = %format!("{e:#}"), "flamepipe failed");
            } else {
                eprintln!("flamepipe: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

/// Loads a config, printing errors and warnings to stderr.
fn load(path: &Path) -> Result<config::Loaded, Failure> {
    match config::load_file(path, &registry::registry()) {
        Ok(loaded) => Ok(loaded),
        Err(invalid) => {
            for line in invalid.errors {
                eprintln!("{line}");
            }
            for line in invalid.warnings {
                eprintln!("warning: {line}");
            }
            Err(Failure::Usage)
        }
    }
}

fn validate(path: &Path) -> Result<(), Failure> {
    let loaded = load(path)?;
    for line in &loaded.warnings {
        eprintln!("warning: {line}");
    }
    let c = &loaded.config;
    println!(
        "{}: valid ({} pipelines, {} receivers, {} processors, {} exporters, {} extensions, {} stores)",
        path.display(),
        c.service.pipelines.len(),
        c.receivers.len(),
        c.processors.len(),
        c.exporters.len(),
        c.service.extensions.len(),
        c.storage.len()
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow::Error::new(e).context("cannot start the async runtime")))
}

fn run(path: &Path) -> Result<(), Failure> {
    start(path, load(path)?)
}

/// `run` with the config cut down to its compactor extensions: no receivers, no pipelines.
fn compact(path: &Path) -> Result<(), Failure> {
    let mut loaded = load(path)?;
    let config = &mut loaded.config;
    let compactors: Vec<String> = config
        .extensions
        .keys()
        .filter(|id| config::component_type(id) == Some("compactor"))
        .cloned()
        .collect();
    if compactors.is_empty() {
        eprintln!(
            "{}: defines no compactor extension (extensions.compactor); nothing to run",
            path.display()
        );
        return Err(Failure::Usage);
    }
    config.service.pipelines.clear();
    config.receivers.clear();
    config.processors.clear();
    config.exporters.clear();
    config.extensions.retain(|id, _| compactors.contains(id));
    config.service.extensions = compactors;
    start(path, loaded)
}

fn start(path: &Path, loaded: config::Loaded) -> Result<(), Failure> {
    let runtime = runtime()?;
    let telemetry = &loaded.config.service.telemetry;
    // Inside the runtime: a span exporter's connection runs on it.
    let _logging = {
        let _in_runtime = runtime.enter();
        logging::init(telemetry.logs.level, telemetry.logs.format, &telemetry.traces)
    };
    for line in &loaded.warnings {
        warn!("{line}");
    }
    info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "starting flamepipe");
    runtime.block_on(async {
        let stop = shutdown_signal();
        let topology = topology::build(loaded.config)
            .await
            .map_err(|e| Failure::Runtime(e.into()))?;
        topology.run(stop).await.map_err(|e| Failure::Runtime(e.into()))
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal sent right after "flamepipe started" is not lost
/// (without a handler, SIGTERM would kill the process without draining).
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                error!(error = %e, "cannot listen for SIGINT/SIGTERM; stop flamepipe with SIGKILL");
                return std::future::pending().await;
            }
        };
        let signal = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        info!(signal, "received signal");
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        info!(signal = "Ctrl-C", "received signal");
    }
}

fn upload(args: cli::UploadArgs) -> Result<(), Failure> {
    let labels = upload_cmd::parse_labels(&args.labels).map_err(|e| {
        eprintln!("flamepipe: --labels: {e}");
        Failure::Usage
    })?;
    let upload = upload_cmd::Upload {
        url: args.url,
        tenant: args.tenant,
        service: args.service,
        labels,
        files: args.files,
    };
    upload.run(&mut std::io::stderr()).map_err(Failure::Runtime)
}

fn blocks(command: BlocksCommand) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let result = runtime()?.block_on(async {
        match &command {
            BlocksCommand::Ls(store) => blocks_cmd::ls(&store.store, &mut out).await,
            BlocksCommand::Dump { store, block_id } => {
                blocks_cmd::dump(&store.store, block_id.as_deref(), &mut out).await
            }
            BlocksCommand::Verify { store, quarantine } => {
                blocks_cmd::verify(&store.store, *quarantine, &mut out, &mut std::io::stderr()).await
            }
        }
    });
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.downcast_ref::<blocks_cmd::BadStore>().is_some() => {
            eprintln!("flamepipe: {e}");
            Err(Failure::Usage)
        }
        Err(e) => Err(Failure::Runtime(e)),
    }
}
