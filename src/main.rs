//! The `idrecon` binary: parses the command line, starts tracing, dispatches to
//! [`idrecon::cli::run`]. No logic lives here.

/// Small blocks from mimalloc, large ones from glibc (`idrecon::alloc`).
#[global_allocator]
static GLOBAL: idrecon::alloc::SplitAllocator = idrecon::alloc::SplitAllocator;

fn main() {
    let cli = idrecon::cli::parse();
    if let Err(error) = idrecon::cli::telemetry::init(&cli.log) {
        eprintln!("warning: {error}");
    }
    match idrecon::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {}", idrecon::cli::error_report(&error));
            std::process::exit(1);
        }
    }
}
