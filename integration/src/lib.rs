//! Helpers for the end-to-end tests in `integration/tests/`: start the real `flamepipe` binary
//! on loopback ports of its own choosing, talk to it over HTTP, read what it stored, and ask
//! the reference tools (`go tool pprof`, the real profiler SDKs) for the expected answers.
//!
//! The tests run as test targets of the root package (see the root Cargo.toml), so the binary
//! under test is the one cargo just built (`CARGO_BIN_EXE_flamepipe`).
//!
//! Peers are found where `integration/setup.sh` installs them. Outside CI a missing peer skips
//! the test with a message; with `CI=true` it fails the test.

pub mod load;
pub mod measure;
pub mod metrics_store;
pub mod moto;
pub mod pprof_ref;
pub mod process;
pub mod query_client;
pub mod stored;

use std::path::{Path, PathBuf};

pub use process::{Flamepipe, Options};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

/// The benchmark corpus, kept in the repository (`integration/testdata/bench-corpus`: real Go
/// profiles, see its README), so that a clone alone runs the benchmarks.
pub fn bench_corpus() -> PathBuf {
    repo_root().join("integration/testdata/bench-corpus")
}

/// The profile fixtures the tests use, kept in the repository (`integration/testdata/fixtures`,
/// described by its MANIFEST.md) so that a clone alone passes the suite.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("integration/testdata/fixtures")
}

pub fn fixture(rel: &str) -> PathBuf {
    fixtures_dir().join(rel)
}

/// Every file in a fixture folder, sorted.
pub fn fixtures_in(dir: &str) -> Vec<PathBuf> {
    files_in(&fixtures_dir().join(dir))
}

/// Every file in `dir`, sorted by name.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable dir entry").path())
        .collect();
    files.sort();
    files
}

/// The contents of every file of one bench corpus folder (`cpu`, `m10`), sorted by name.
pub fn bench_corpus_files(name: &str) -> Vec<Vec<u8>> {
    files_in(&bench_corpus().join(name))
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

/// Each corpus file as one ingest request's profiles, decoded as the pyroscope receiver
/// decodes them, under 8 services (`bench-svc-N`) by file.
pub fn bench_requests(files: &[Vec<u8>]) -> Vec<Vec<flamepipe_core::Profile>> {
    use flamepipe_core::formats::pprof::{ConvertOptions, Limits, decode_profiles};
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let series: flamepipe_core::Labels =
                [("service_name", format!("bench-svc-{}", i % 8))].into_iter().collect();
            let opts = ConvertOptions {
                series: &series,
                name: None,
                timestamp_ns: None,
                duration_ns: None,
                default_timestamp_ns: 1_700_000_000_000_000_000,
                display_names: None,
            };
            decode_profiles(f, &Limits::default(), &opts).expect("corpus file decodes")
        })
        .collect()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `path` if it exists. Otherwise fails the test under CI, and outside CI prints why
/// the test is skipped and returns `None`.
pub fn require_peer(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{what} not found at {} (run integration/setup.sh)", path.display());
    assert!(!in_ci(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// The `go` binary, for `go tool pprof`.
pub fn go_tool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("go"))
            .find(|p| p.is_file())
    });
    require_peer(
        found.unwrap_or_else(|| PathBuf::from("/usr/bin/go")),
        "go (Debian golang-go)",
    )
}

/// The Python of a venv made by setup.sh (`.venv` or `.venv-legacy`).
pub fn venv_python(venv: &str) -> Option<PathBuf> {
    require_peer(
        repo_root().join("integration").join(venv).join("bin/python"),
        &format!("{venv} python"),
    )
}

/// `node` with integration/node_modules installed.
pub fn node_with_modules() -> Option<PathBuf> {
    require_peer(
        repo_root().join("integration/node_modules/@pyroscope/nodejs"),
        "@pyroscope/nodejs",
    )?;
    let node = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("node"))
            .find(|p| p.is_file())
    });
    require_peer(node.unwrap_or_else(|| PathBuf::from("/usr/bin/node")), "node")
}
