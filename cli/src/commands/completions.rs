//! `mcodec completions SHELL`: the shell's completion script for this command line, on
//! standard output (generated from the same argument types that parse it, so it never
//! lags behind a new flag).

use clap::CommandFactory;

use crate::error::CliError;
use crate::{Cli, CompletionsArgs, Global};

/// Prints the completion script of `a.shell`.
pub fn run(a: &CompletionsArgs, _g: &Global) -> Result<(), CliError> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut command, "mcodec", &mut script);
    super::emit(&String::from_utf8_lossy(&script))
}
