//! The `mcodec` command line as a library: the argument types and [`execute`], so that
//! other front ends (the Python package) give exactly the CLI's guarantees (atomic
//! outputs, no overwrite without `force`, bit-exact round trips) without a subprocess.
#![warn(missing_docs)]

mod commands;
mod error;
mod fsutil;
mod heap;
pub mod process;
mod progress;
mod signals;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mcodec::{Dtype, EncodeOptions};

pub use crate::error::{CliError, Failure, EXIT_FAILURE, EXIT_USAGE};
pub use crate::fsutil::{new_file_permissions, write_atomic};
pub use crate::signals::install as install_signal_handlers;

/// Lossless compression of neural-network weights (safetensors <-> .mcz).
#[derive(Parser, Debug)]
#[command(name = "mcodec", version, propagate_version = true)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes, before or after its name.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Worker threads [default: all cores]
    #[arg(
        short = 'j',
        long = "threads",
        value_name = "N",
        global = true,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub threads: Option<u16>,
    /// Overwrite existing output
    #[arg(short, long, global = true)]
    pub force: bool,
    /// Print no progress bar and no summary
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compress a safetensors file (or every one in a directory) to .mcz
    Pack(PackArgs),
    /// Restore the original file (or directory) from .mcz
    Unpack(UnpackArgs),
    /// List the tensors of an .mcz file with their codecs and sizes
    Inspect(InspectArgs),
    /// Decode everything and check every checksum, writing nothing
    Verify(VerifyArgs),
    /// Measure ratio and in-memory encode/decode speed
    Bench(BenchArgs),
    /// Content-addressed model store with tensor dedup and deltas (see docs/STORE.md)
    Store(commands::store::StoreArgs),
    /// Decode an .mcz on the GPU: throughput beside a device copy, and bit-exactness
    GpuBench(GpuBenchArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
}

/// Compression effort.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// Like `zstd -1`: encodes 1.8–3× as fast as the default on one thread, files
    /// under 0.1 point larger (MiniLM): one table per stream wherever a sample says more
    /// cannot pay, up to 4 unrefined elsewhere. Same format: every decoder reads it, a
    /// little faster
    Fast,
    /// Good compression, the tables planned per 256-element block
    #[default]
    Default,
    /// Slower search for the last tenth of a percent, never larger than the default
    /// (MiniLM: 0.03–0.18 points smaller, decoding about as fast on the CPU); tensors
    /// over the GPU decoder's table limit decode on the CPU there
    Max,
}

impl Level {
    /// The encoder settings of this level, with the chunk length exponent if one is given.
    pub fn options(self, chunk_log2: Option<u8>) -> EncodeOptions {
        let mut opts = match self {
            Self::Fast => EncodeOptions::fast(),
            Self::Default => EncodeOptions::default(),
            Self::Max => EncodeOptions::max(),
        };
        if let Some(c) = chunk_log2 {
            opts.chunk_log2 = c;
            // A block never spans chunks.
            opts.block_log2 = opts.block_log2.min(c);
        }
        opts
    }

    /// The level's name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Default => "default",
            Self::Max => "max",
        }
    }
}

/// Arguments of `pack`.
#[derive(Args, Debug)]
pub struct PackArgs {
    /// Safetensors file, or a directory to pack recursively; - reads standard input
    pub input: PathBuf,
    /// Output [default: INPUT.mcz; standard output for standard input]; - writes standard
    /// output
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Compression level
    #[arg(long, value_enum, default_value_t = Level::Default)]
    pub level: Level,
    /// Elements per independently decodable chunk, as a power of two [default: 18].
    /// Smaller chunks give a GPU more warps on small models, at some size cost
    #[arg(long, value_name = "LOG2", value_parser = parse_chunk_log2)]
    pub chunk_log2: Option<u8>,
    /// Pack a non-safetensors file as raw elements of this dtype (e.g. BF16, F32)
    #[arg(long, value_name = "DT", value_parser = parse_dtype)]
    pub dtype: Option<Dtype>,
    /// Remove the input file once its .mcz is written, synced and decodes to the input's
    /// checksums (a file only: not a directory, nor standard input or output)
    #[arg(long)]
    pub rm: bool,
}

/// Arguments of `unpack`.
#[derive(Args, Debug)]
pub struct UnpackArgs {
    /// .mcz file, or a directory made by `pack`; - reads standard input
    pub input: PathBuf,
    /// Output [default: INPUT without .mcz; standard output for standard input]; - writes
    /// standard output, after checking every checksum (damaged input writes nothing)
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Remove the .mcz once the output is written (every checksum checked) and synced (a
    /// file only: not a directory, nor standard input or output)
    #[arg(long)]
    pub rm: bool,
}

/// Arguments of `inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// .mcz file; - reads standard input
    pub file: PathBuf,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// .mcz file, or a directory whose .mcz files to check; - reads standard input
    pub file: PathBuf,
}

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Safetensors file (or .mcz, unpacked to memory first); - reads standard input
    pub file: PathBuf,
    /// Timed repeats of each of encode, warm decode and cold decode; the median is reported
    #[arg(long, value_name = "R", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Compression level
    #[arg(long, value_enum, default_value_t = Level::Default)]
    pub level: Level,
    /// Elements per independently decodable chunk, as a power of two [default: 18]
    #[arg(long, value_name = "LOG2", value_parser = parse_chunk_log2)]
    pub chunk_log2: Option<u8>,
    /// Treat a non-safetensors file as raw elements of this dtype
    #[arg(long, value_name = "DT", value_parser = parse_dtype)]
    pub dtype: Option<Dtype>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `gpu-bench`.
#[derive(Args, Debug)]
pub struct GpuBenchArgs {
    /// .mcz file; - reads standard input
    pub file: PathBuf,
    /// Timing event pairs (each around --launches decodes, and as many copies); medians
    /// are reported
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Back-to-back launches between each pair of timing events (host launch latency
    /// drops out of sub-millisecond decodes); times are reported per launch
    #[arg(long, value_name = "K", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub launches: u32,
    /// CUDA device ordinal
    #[arg(long, value_name = "I", default_value_t = 0)]
    pub device: usize,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Dtype names `--dtype` accepts.
const DTYPES: &str =
    "BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2";

/// Parses a `--chunk-log2` value: a chunk length exponent the format allows.
fn parse_chunk_log2(s: &str) -> Result<u8, String> {
    let range = mcodec::tensor::CHUNK_LOG2_RANGE;
    s.parse::<u8>()
        .ok()
        .filter(|c| range.contains(c))
        .ok_or_else(|| format!("expected an integer in {}..={}", range.start(), range.end()))
}

/// Arguments of `completions`.
#[derive(Args, Debug)]
#[command(after_help = "Install, for example:\n  \
    bash: mcodec completions bash > ~/.local/share/bash-completion/completions/mcodec\n  \
    zsh:  mcodec completions zsh > ~/.zfunc/_mcodec  (with ~/.zfunc in $fpath)\n  \
    fish: mcodec completions fish > ~/.config/fish/completions/mcodec.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Parses a `--dtype` value; unknown names are refused since their element size is unknown.
fn parse_dtype(s: &str) -> Result<Dtype, String> {
    match Dtype::parse(&s.to_ascii_uppercase()) {
        Dtype::Other(_) => Err(format!("unknown dtype (known: {DTYPES})")),
        d => Ok(d),
    }
}

/// Runs one parsed command line on the current rayon pool (the caller sizes it: `main`
/// builds the global pool from `--threads`).
pub fn execute(cli: &Cli) -> Result<(), CliError> {
    let g = &cli.global;
    match &cli.command {
        Command::Pack(a) => commands::pack::run(a, g),
        Command::Unpack(a) => commands::unpack::run(a, g),
        Command::Inspect(a) => commands::inspect::run(a, g),
        Command::Verify(a) => commands::verify::run(a, g),
        Command::Bench(a) => commands::bench::run(a, g),
        Command::Store(a) => commands::store::run(a, g),
        Command::GpuBench(a) => commands::gpu_bench::run(a, g),
        Command::Completions(a) => commands::completions::run(a, g),
    }
}
