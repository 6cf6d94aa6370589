//! `mcodec`: pack, unpack, inspect, verify and benchmark `.mcz` files.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(mcodec_cli::process::main(std::env::args_os()))
}
