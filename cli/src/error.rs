//! The one error type of the tool: a problem, the file it concerns and its kind (which
//! gives the exit code).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use mcodec::container::ContainerError;
use mcodec::simd::SimdError;
use mcodec::tensor::TensorError;
use mcodec_gpu::{GpuError, PlanError};
use mcodec_store::outdir::OutputError;
use mcodec_store::{BackendError, InputProblem, StoreError};

/// Exit code of a failed operation.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error (the same as clap's).
pub const EXIT_USAGE: i32 = 2;

/// What kind of failure a [`CliError`] is, for callers that react to kinds (the Python
/// package picks its exception class by it) rather than read the message. Typed errors
/// get theirs from their type (the crate's `Classify`) where they become a [`CliError`];
/// a message written in place names its kind. Messages are free to change; kinds are the
/// contract. Not `non_exhaustive`: a new kind must be mapped by every caller, not fall
/// into a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The command line is wrong: a bad argument or combination (exit code 2).
    Usage,
    /// An argument found unworkable once the command ran: an output that is its own
    /// input, a name a manifest may not hold, a buffer of the wrong size (exit code 1).
    Invalid,
    /// An input file or directory (or a stored model) does not exist.
    Missing,
    /// The output (or model) exists and overwriting was not asked for.
    Exists,
    /// The data is damaged, truncated, or not of the expected format.
    Corrupt,
    /// A size exceeds what the reader or this machine allows.
    Limit,
    /// The input is valid but cannot be represented: a name too long for the index, a
    /// tree holding a FIFO or a symlink leading out of it.
    Unsupported,
    /// Any other file-system failure (permissions, a full disk, a directory where a file
    /// was asked for).
    Io,
    /// Anything else: no thread or signal handler, the GPU failing, a bug caught.
    Other,
}

impl Failure {
    /// The process exit code of a failure of this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            Failure::Usage => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// A failure, reported as one line `mcodec: <file>: <problem>`.
#[derive(Debug, thiserror::Error)]
pub struct CliError {
    /// The file the problem concerns, if any.
    pub path: Option<PathBuf>,
    /// What went wrong, on one line.
    pub problem: String,
    /// What kind of failure it is (the message says the details); it gives the exit
    /// code.
    pub kind: Failure,
}

impl CliError {
    /// The typed error `e` concerning `path`, of the kind its type gives it.
    pub fn at<E: fmt::Display + Classify>(path: &Path, e: E) -> Self {
        Self::at_kind(path, e.failure(), e)
    }

    /// A failure of `kind` concerning `path`: for messages written in place, and for
    /// typed errors reworded there.
    pub fn at_kind(path: &Path, kind: Failure, problem: impl fmt::Display) -> Self {
        Self {
            path: Some(path.to_owned()),
            ..Self::plain(kind, problem)
        }
    }

    /// A usage error concerning `path` (exit code 2, like clap's own).
    pub fn usage(path: &Path, problem: impl fmt::Display) -> Self {
        Self::at_kind(path, Failure::Usage, problem)
    }

    /// A failure of `kind` that concerns no particular file.
    pub fn plain(kind: Failure, problem: impl fmt::Display) -> Self {
        Self {
            path: None,
            problem: one_line(&problem.to_string()),
            kind,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "mcodec: {}: {}", p.display(), self.problem),
            None => write!(f, "mcodec: {}", self.problem),
        }
    }
}

impl From<OutputError> for CliError {
    fn from(e: OutputError) -> Self {
        let path = e.path().to_owned();
        let problem = e.to_string();
        // The message starts with the path; the CLI prints it once, in front.
        let prefix = format!("{}: ", path.display());
        let problem = problem.strip_prefix(&prefix).unwrap_or(&problem).to_owned();
        Self::at_kind(&path, e.failure(), problem)
    }
}

/// Attaches a file name to a typed error.
pub trait Context<T> {
    /// Turns the error into a [`CliError`] about `path`, of the kind its type gives it.
    fn at(self, path: &Path) -> Result<T, CliError>;
}

impl<T, E: fmt::Display + Classify> Context<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, CliError> {
        self.map_err(|e| CliError::at(path, e))
    }
}

/// The [`Failure`] kind of a typed error, decided by its type and variant where it is
/// turned into a [`CliError`], so that no caller has to guess it from the message.
/// Implemented for every error type the CLI (and the Python package) reports; none
/// gives [`Failure::Usage`], which only the command line's own checks raise.
pub trait Classify {
    /// What kind of failure this is.
    fn failure(&self) -> Failure;
}

impl Classify for io::Error {
    fn failure(&self) -> Failure {
        match self.kind() {
            io::ErrorKind::NotFound => Failure::Missing,
            io::ErrorKind::AlreadyExists => Failure::Exists,
            _ => Failure::Io,
        }
    }
}

impl Classify for ContainerError {
    fn failure(&self) -> Failure {
        match self {
            ContainerError::Io(e) => e.failure(),
            // Not the format asked for, or damaged: either way the bytes are wrong.
            ContainerError::Safetensors(_)
            | ContainerError::Empty
            | ContainerError::NoMagic
            | ContainerError::Version { .. }
            | ContainerError::Corrupt(_)
            | ContainerError::Checksum { .. } => Failure::Corrupt,
            ContainerError::Unsupported(_) => Failure::Unsupported,
            ContainerError::Limit { .. } => Failure::Limit,
            // The caller's buffer, not the file.
            ContainerError::OutputSize { .. } => Failure::Invalid,
            ContainerError::Tensor { source, .. } => source.failure(),
            // Variants added later (the enum is non-exhaustive) until classified here.
            _ => Failure::Other,
        }
    }
}

impl Classify for TensorError {
    fn failure(&self) -> Failure {
        match self {
            // What the index and the streams hold: damaged if it does not decode.
            TensorError::Stream { .. }
            | TensorError::Zstd(_)
            | TensorError::StoredSize { .. }
            | TensorError::StreamCount { .. }
            | TensorError::ChunkLog2 { .. }
            | TensorError::PartialElement { .. } => Failure::Corrupt,
            // The caller's options or buffer (the CLI's levels and buffers are always
            // right, so seeing one is a bug, but it is not the data's fault).
            TensorError::BlockLog2 { .. } | TensorError::OutputSize { .. } => Failure::Invalid,
            // The receiver's own error says why; it has already been reported.
            TensorError::Stopped => Failure::Other,
            _ => Failure::Other,
        }
    }
}

impl Classify for SimdError {
    fn failure(&self) -> Failure {
        match self {
            SimdError::UnknownValue { .. } | SimdError::Contradiction { .. } => Failure::Invalid,
            SimdError::Unsupported { .. } => Failure::Unsupported,
            _ => Failure::Other,
        }
    }
}

impl Classify for OutputError {
    fn failure(&self) -> Failure {
        match self {
            OutputError::Exists { .. } => Failure::Exists,
            OutputError::Symlink { .. }
            | OutputError::IsDirectory { .. }
            | OutputError::Temporary { .. } => Failure::Io,
            OutputError::Io { source, .. } => source.failure(),
            _ => Failure::Other,
        }
    }
}

impl Classify for InputProblem {
    fn failure(&self) -> Failure {
        match self {
            InputProblem::Io(e) => e.failure(),
            InputProblem::Packed(e) => e.failure(),
            InputProblem::TooDeep { .. } | InputProblem::TooManyFiles { .. } => Failure::Limit,
            // Files a manifest cannot hold as they are.
            InputProblem::NotUtf8
            | InputProblem::Path(_)
            | InputProblem::NotFileOrDir
            | InputProblem::UnpackedNameTaken { .. } => Failure::Unsupported,
            _ => Failure::Other,
        }
    }
}

impl Classify for BackendError {
    fn failure(&self) -> Failure {
        match self {
            BackendError::Io { source, .. } => source.failure(),
            // An object a manifest references is gone, or the location is no store: the
            // store is damaged (or foreign).
            BackendError::NotFound(_) | BackendError::Layout(_) => Failure::Corrupt,
            BackendError::ManifestExists(_) => Failure::Exists,
            BackendError::Remote { .. } => Failure::Io,
            // Another writer got there first; running again settles it.
            BackendError::Conflict(_) => Failure::Other,
            _ => Failure::Other,
        }
    }
}

impl Classify for StoreError {
    fn failure(&self) -> Failure {
        match self {
            StoreError::Backend(e) => e.failure(),
            // A name or manifest the caller asked for that the store may not hold.
            StoreError::Manifest(_)
            | StoreError::OwnBase(_)
            | StoreError::BufferLength { .. }
            | StoreError::NotBlobFile { .. } => Failure::Invalid,
            StoreError::NoSuchModel(_) => Failure::Missing,
            StoreError::ModelExists(_) | StoreError::NameCollision { .. } => Failure::Exists,
            StoreError::Input { problem, .. } => problem.failure(),
            StoreError::Output(e) => e.failure(),
            // What the store holds does not hold together.
            StoreError::BadManifest { .. }
            | StoreError::ManifestName { .. }
            | StoreError::Object { .. }
            | StoreError::Checksum { .. }
            | StoreError::WrongKind { .. }
            | StoreError::WrongTensor { .. }
            | StoreError::WrongBase { .. }
            | StoreError::BlobLength { .. } => Failure::Corrupt,
            // Storage handed back other bytes than it was given.
            StoreError::ReadBack { .. } => Failure::Io,
            // The codec disagreeing with itself: a bug, not the input's fault.
            StoreError::VerifyMismatch { .. } => Failure::Other,
            // A concurrent `gc`; running again settles it.
            StoreError::Vanished(_) => Failure::Other,
            _ => Failure::Other,
        }
    }
}

impl Classify for GpuError {
    fn failure(&self) -> Failure {
        match self {
            GpuError::Plan(PlanError::Container(e)) => e.failure(),
            GpuError::Plan(PlanError::Stream { .. })
            | GpuError::Corrupt(_)
            | GpuError::Mismatch(_) => Failure::Corrupt,
            GpuError::Plan(PlanError::NoSuchTensor { .. })
            | GpuError::BadOutput(_)
            | GpuError::ForeignGroup { .. } => Failure::Invalid,
            // As the Python package classes it: beyond what the device allows.
            GpuError::OutOfMemory { .. } | GpuError::Plan(PlanError::TooLarge { .. }) => {
                Failure::Limit
            }
            GpuError::Open { source, .. } => source.failure(),
            // No device, driver or kernel, or a driver call failing.
            GpuError::NoDevice(_)
            | GpuError::NvrtcMissing(_)
            | GpuError::Compile { .. }
            | GpuError::SharedMemory { .. }
            | GpuError::Driver { .. } => Failure::Other,
            _ => Failure::Other,
        }
    }
}

/// Keeps a message on one line (errors must be exactly one line on stderr) and drops the
/// "(os error N)" that `io::Error` appends, which says nothing to a user.
fn one_line(s: &str) -> String {
    let mut s = if s.contains(['\n', '\r']) {
        s.split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        s.to_owned()
    };
    while let Some(i) = s.find(" (os error ") {
        match s[i..].find(')') {
            Some(j) => s.replace_range(i..i + j + 1, ""),
            None => break,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::fs;

    use clap::Parser;

    use super::*;
    use crate::{execute, write_atomic, Cli};

    /// Runs the command line `args` (after `mcodec`), which must fail; its error.
    fn fails(args: &[&Path]) -> CliError {
        let argv = std::iter::once(Path::new("mcodec")).chain(args.iter().copied());
        let cli = Cli::try_parse_from(argv).expect("arguments parse");
        execute(&cli).expect_err("the command fails")
    }

    /// Failures that callers tell apart get their kind from the error's type (or the
    /// place that words them), not from their message, and keep their exit codes.
    #[test]
    fn failures_have_the_kind_of_their_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let p = |name: &str| tmp.path().join(name);
        let values: Vec<u8> = (0..4096u32)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let st = mcodec_fixtures::safetensors::safetensors_bytes(
            &[("w", "F32", &[4096], &values)],
            None,
            0,
        )
        .unwrap();
        fs::write(p("m.safetensors"), &st).unwrap();
        let pack = Path::new("pack");
        let unpack = Path::new("unpack");
        let o = Path::new("-o");
        let packed = p("m.mcz");
        assert!(execute(
            &Cli::try_parse_from([
                Path::new("mcodec"),
                pack,
                Path::new("-q"),
                &p("m.safetensors"),
                o,
                &packed
            ])
            .unwrap()
        )
        .is_ok());
        let data = fs::read(&packed).unwrap();

        let kind = |e: CliError| (e.kind, e.kind.exit_code());
        let missing = fails(&[pack, &p("absent.safetensors")]);
        assert!(
            missing.problem.contains("No such file"),
            "{}",
            missing.problem
        );
        assert_eq!(kind(missing), (Failure::Missing, EXIT_FAILURE));

        let exists = fails(&[pack, &p("m.safetensors"), o, &packed]);
        assert!(exists.problem.contains("(use -f to overwrite)"));
        assert_eq!(kind(exists), (Failure::Exists, EXIT_FAILURE));

        // The output appearing while it is written (the worded message, not the check).
        let raced = p("raced");
        let e = write_atomic(&raced, false, None, |_| {
            fs::write(&raced, b"first").map_err(|e| CliError::at(&raced, e))
        })
        .unwrap_err();
        assert_eq!(e.problem, "already exists (use -f to overwrite)");
        assert_eq!(kind(e), (Failure::Exists, EXIT_FAILURE));

        let mut damaged = data.clone();
        damaged[data.len() / 2] ^= 1;
        fs::write(p("damaged.mcz"), &damaged).unwrap();
        let e = fails(&[unpack, &p("damaged.mcz"), o, &p("d.out")]);
        assert_eq!(kind(e), (Failure::Corrupt, EXIT_FAILURE));

        for cut in [0, 10, data.len() / 2, data.len() - 1] {
            fs::write(p("cut.mcz"), &data[..cut]).unwrap();
            let e = fails(&[unpack, &p("cut.mcz"), o, &p("cut.out")]);
            assert_eq!(kind(e), (Failure::Corrupt, EXIT_FAILURE), "cut at {cut}");
        }

        fs::write(p("foreign.safetensors"), b"plain text, not a tensor file").unwrap();
        let e = fails(&[pack, &p("foreign.safetensors")]);
        assert!(e.problem.contains("not a valid safetensors file"));
        assert_eq!(kind(e), (Failure::Corrupt, EXIT_FAILURE));

        let force = Path::new("-f");
        let e = fails(&[pack, force, &p("m.safetensors"), o, &p("m.safetensors")]);
        assert_eq!(kind(e), (Failure::Invalid, EXIT_FAILURE));

        let e = fails(&[unpack, &p("m.safetensors")]);
        assert!(e.problem.contains("no .mcz suffix"));
        assert_eq!(kind(e), (Failure::Usage, EXIT_USAGE));
    }
}
