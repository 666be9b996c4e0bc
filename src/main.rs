//! The `idrecon` binary: parses the command line, starts tracing, dispatches to
//! [`idrecon::cli::run`]. No logic lives here.

use clap::Parser;

fn main() {
    let cli = idrecon::cli::Cli::parse();
    if let Err(error) = idrecon::telemetry::init(&cli.log) {
        eprintln!("warning: {error}");
    }
    match idrecon::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}
