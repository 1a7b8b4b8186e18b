//! `risctl`: parses the command line and runs it; any error is printed once, exit 1.

use std::process::ExitCode;

use clap::Parser as _;
use ris_cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("risctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ris_cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("risctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}
