//! The web UI in a real browser: tests/browser/test_ui.py and test_pages.py drive Debian's
//! Chromium with Playwright (pinned in tests/python/requirements.txt; scripts/browser-env.sh
//! installs both) against the real `hearth` binary this build made, started by the suite itself as users start
//! it (the repo's config.toml, its own port and data directory) so that it can be SIGKILLed and
//! restarted mid-answer. Screenshots (1280×800 and 412×915, light and dark) are written to
//! target/ui-screenshots. The figures the suite measures are printed as `FIGURE …` lines.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{self, python};

/// The whole browser suite must finish within this.
const TIMEOUT: Duration = Duration::from_secs(1200);

#[test]
fn the_web_ui_works_in_chromium_against_the_real_server_and_model() {
    // The suite's servers run the model: nothing else may meanwhile.
    let _model = common::serial();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    python::run(
        &[
            "-m",
            "unittest",
            "-v",
            "tests.browser.test_ui",
            "tests.browser.test_pages",
            "tests.browser.test_blog",
        ],
        &[
            ("HEARTH_BIN", env!("CARGO_BIN_EXE_hearth").to_string()),
            (
                "HEARTH_MODEL_PATH",
                common::model_path().to_string_lossy().into_owned(),
            ),
            (
                "HEARTH_SCREENSHOTS",
                root.join("target/ui-screenshots")
                    .to_string_lossy()
                    .into_owned(),
            ),
        ],
        TIMEOUT,
        "the browser tests",
    );
}
