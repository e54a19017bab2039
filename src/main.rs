//! The `brain` command line: parses arguments and hands over to the library.

use brain::cli::Cli;
use brain::telemetry;

/// glibc's allocator took a quarter of `brain serve`'s CPU under load (fragmented frees of
/// request and event buffers, in `perf`); mimalloc does the same work with less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // One TLS stack in the build (ring), installed once for every HTTP client of the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse_args();
    telemetry::init_logs(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(cli.run())
}
