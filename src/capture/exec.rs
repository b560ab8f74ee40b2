//! Running the rule tools: finding `iptables`, `nft` and friends (they live
//! in /usr/sbin, often outside a user's PATH), running one with input, and
//! reporting a failure with the command, its stderr and the input.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Directories searched after PATH.
const SBIN: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// The kernel file that exists when the kernel has IPv6.
pub const IF_INET6: &str = "/proc/net/if_inet6";

/// Where `name` is: the first executable file of that name in PATH, then
/// in the sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the kernel has IPv6 (in this network namespace).
pub fn kernel_has_ipv6() -> bool {
    Path::new(IF_INET6).exists()
}

/// A tool that could not be run or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The process could not be started or waited for.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}{input}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
        /// The input it was given, numbered (empty when none), since
        /// restore tools name the failing line by number.
        input: String,
    },
}

/// Runs `tool args…` with `input` on stdin; its stdout.
pub fn run(tool: &Path, args: &[&str], input: Option<&str>) -> Result<String, ExecError> {
    let command = std::iter::once(tool.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let spawn_error = |source| ExecError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that exits early closes the pipe; its status says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let numbered = input
        .map(|text| {
            let lines: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| format!("  {:>3} {l}", i + 1))
                .collect();
            format!("\ninput:\n{}", lines.join("\n"))
        })
        .unwrap_or_default();
    Err(ExecError::Failed {
        command,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        input: numbered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_command_stderr_and_input() {
        let sh = find_tool("sh").expect("sh");
        let e = run(
            &sh,
            &["-c", "cat >/dev/null; echo 'line 2 failed' >&2; exit 3"],
            Some("*nat\n-A BAD\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("-c cat >/dev/null"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("line 2 failed"), "{e}");
        assert!(e.contains("    2 -A BAD"), "{e}");
        let out = run(&sh, &["-c", "cat"], Some("hello")).unwrap();
        assert_eq!(out, "hello");
        let e = run(Path::new("/nonexistent/iptables"), &[], None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot run `/nonexistent/iptables`"),
            "{e}"
        );
    }
}
