//! A Python interpreter with the modules a test's peer needs (grpcio and
//! friends, from Debian's packages or pip): found, or the test is skipped —
//! except under CI, where a missing peer fails it.

use std::process::Command;

/// An interpreter that runs `check` (a Python one-liner that imports the
/// modules and prints their versions), or why there is none.
fn find(check: &str) -> Result<(String, String), String> {
    let mut tried = Vec::new();
    for py in ["python3", "/usr/bin/python3", "python"] {
        match Command::new(py).args(["-c", check]).output() {
            Ok(o) if o.status.success() => {
                return Ok((
                    py.to_string(),
                    String::from_utf8_lossy(&o.stdout).trim().to_string(),
                ));
            }
            Ok(o) => tried.push(format!(
                "{py}: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => tried.push(format!("{py}: {e}")),
        }
    }
    Err(tried.join("; "))
}

/// The interpreter for `test`, whose peer needs `modules` (said in
/// messages) checked by `check`; `None` (skip) outside CI, a failure under
/// `CI=true` (`.ci/run` installs them).
pub fn python_or_skip(test: &str, modules: &str, check: &str) -> Option<String> {
    match find(check) {
        Ok((py, versions)) => {
            eprintln!("{test}: {py} with {modules} ({versions})");
            Some(py)
        }
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{test}: CI=true but no python3 with {modules} ({why}); .ci/run installs them"
            );
            eprintln!("SKIPPED {test}: no python3 with {modules} ({why})");
            None
        }
    }
}
