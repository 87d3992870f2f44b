//! `modbus-detect`: parse the flags, run, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match modbus_detect::cli::parse_with_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("modbus-detect: error: {e}");
            return ExitCode::from(3);
        }
    };
    match modbus_detect::app::run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("modbus-detect: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
