//! Hooks for the crash tests, compiled only with the `test-hooks` feature (which the
//! CLI enables for its own tests through a dev-dependency): the shipped binary has none.

use std::sync::OnceLock;
use std::time::Duration;

/// `add` pauses once it has created this many objects.
const PAUSE_ENV: &str = "MCODEC_STORE_TEST_PAUSE_AFTER_OBJECTS";
/// With [`PAUSE_ENV`]: pause this many seconds, then go on (the S3 tests restart the
/// server meanwhile); without it, pause forever so the test can kill the process.
const PAUSE_SECS_ENV: &str = "MCODEC_STORE_TEST_PAUSE_SECS";

/// After the `created`-th new object of an add: print a line to stderr and sleep, when
/// the environment asks for it.
pub(crate) fn pause_after_objects(created: u64) {
    static PAUSE: OnceLock<Option<(u64, Option<Duration>)>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        let after = std::env::var(PAUSE_ENV).ok()?.parse().ok()?;
        let secs = std::env::var(PAUSE_SECS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        Some((after, secs))
    });
    let Some((after, secs)) = *pause else {
        return;
    };
    if created != after {
        return;
    }
    eprintln!("mcodec-store: paused after {created} objects");
    match secs {
        Some(d) => std::thread::sleep(d),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}
