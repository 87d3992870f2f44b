//! `modbus-detect`: parse the flags, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = modbus_detect::cli::Args::parse();
    match modbus_detect::app::run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("modbus-detect: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
