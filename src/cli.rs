//! The command line: `flamepipe [run] [--config FILE]`, `flamepipe validate FILE`,
//! `flamepipe compact [--config FILE]`, `flamepipe blocks ls|dump|verify --store URL` and
//! `flamepipe upload FILE...`.
//!
//! Parsing only; `main` dispatches. Clap exits with code 2 on a usage error, which is also
//! the code for a bad config.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A pipeline for continuous-profiling data: receive profiles, segment them, store them as
/// blocks in object storage.
#[derive(Debug, Parser)]
#[command(name = "flamepipe", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipelines of a config (the default command)
    Run(ConfigArg),
    /// Check a config and report every problem in it; exits 2 if there is any
    Validate(ValidateArgs),
    /// Run only the compactor extensions a config defines (listed in service.extensions or
    /// not), with its stores and telemetry: a compactor process beside agents on one store
    Compact(ConfigArg),
    /// Inspect the blocks in an object store
    #[command(subcommand)]
    Blocks(BlocksCommand),
    /// Send profile files (pprof, speedscope, folded; told from their content) to a
    /// Pyroscope-compatible server
    Upload(UploadArgs),
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The server: flamepipe's pyroscope receiver, or Pyroscope
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4040")]
    pub url: String,
    /// The tenant (X-Scope-OrgID)
    #[arg(long, visible_alias = "tenant-id", value_name = "TENANT")]
    pub tenant: Option<String>,
    /// The service name the profiles are stored under (a service_name label wins)
    #[arg(long, value_name = "NAME", default_value = "flamepipe-upload")]
    pub service: String,
    /// Series labels, k=v[,k=v...]; may be repeated
    #[arg(long, visible_alias = "extra-labels", value_name = "K=V,...")]
    pub labels: Vec<String>,
    /// The files to send
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The pipeline config file
    #[arg(short, long, value_name = "FILE", default_value = "pipeline.yaml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pipeline config file
    #[arg(value_name = "FILE", conflicts_with = "config")]
    pub file: Option<PathBuf>,
    /// The pipeline config file (same as the positional FILE)
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ValidateArgs {
    pub fn path(&self) -> PathBuf {
        self.file
            .clone()
            .or_else(|| self.config.clone())
            .unwrap_or_else(|| PathBuf::from("pipeline.yaml"))
    }
}

#[derive(Debug, Subcommand)]
pub enum BlocksCommand {
    /// List the blocks in a store
    Ls(StoreArg),
    /// Print the objects of one block, or of every block
    Dump {
        #[command(flatten)]
        store: StoreArg,
        /// The block id (a ULID); all blocks when omitted
        block_id: Option<String>,
    },
    /// Read every block in full and print one line per damaged block; exits 1 if any is
    Verify {
        #[command(flatten)]
        store: StoreArg,
        /// Move damaged blocks under quarantine/ so that queries stop reading them
        #[arg(long)]
        quarantine: bool,
    },
}

#[derive(Debug, Args)]
pub struct StoreArg {
    /// The object store: file://PATH, a directory path, or memory://
    #[arg(long, value_name = "URL|PATH")]
    pub store: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run_with_the_default_config() {
        let cli = Cli::try_parse_from(["flamepipe"]).unwrap();
        assert!(cli.command.is_none());
        let Some(Command::Run(arg)) = Cli::try_parse_from(["flamepipe", "run"]).unwrap().command else {
            panic!()
        };
        assert_eq!(arg.config, PathBuf::from("pipeline.yaml"));
    }

    #[test]
    fn validate_takes_the_file_either_way() {
        for argv in [
            &["flamepipe", "validate", "x.yaml"][..],
            &["flamepipe", "validate", "--config", "x.yaml"],
        ] {
            let Some(Command::Validate(v)) = Cli::try_parse_from(argv).unwrap().command else {
                panic!()
            };
            assert_eq!(v.path(), PathBuf::from("x.yaml"));
        }
        assert!(Cli::try_parse_from(["flamepipe", "validate", "a", "--config", "b"]).is_err());
    }
}
