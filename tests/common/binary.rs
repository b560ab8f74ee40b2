//! Running the meshgate binary from a test: the command, its output in
//! messages, and a bound on how long it may run.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meshgate");

/// `meshgate` with the log environment removed, so output is predictable.
pub fn meshgate() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("RUST_LOG").env_remove("MESHGATE_LOG_LEVEL");
    c
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Status, stdout and stderr, for an assertion's message.
pub fn show(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `cmd` to completion, killing the process (by its own id) after
/// `limit`.
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshgate");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for meshgate"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("meshgate did not exit within {limit:?}");
        }
    }
}
