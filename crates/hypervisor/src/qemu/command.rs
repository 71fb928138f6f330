//! Running QEMU's command-line tools.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::driver::{Error, Result};

/// A command for `program`, with no standard input, that is killed if the
/// caller gives up on it (a timeout drops the future running it).
pub(crate) fn command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs `command` to completion and returns its standard output.
pub(crate) async fn run(command: &mut Command) -> Result<Vec<u8>> {
    let program = Path::new(command.as_std().get_program())
        .display()
        .to_string();
    let output = command
        .output()
        .await
        .map_err(Error::io(format!("cannot run {program}")))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(Error::Command {
            program,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_carry_status_and_stderr() {
        let error = run(command(Path::new("sh")).args(["-c", "echo broken >&2; exit 3"]))
            .await
            .expect_err("run should fail");
        assert_eq!(error.to_string(), "`sh` failed (exit status: 3): broken");
    }

    #[tokio::test]
    async fn success_returns_stdout() {
        let stdout = run(command(Path::new("sh")).args(["-c", "echo ok"]))
            .await
            .expect("run");
        assert_eq!(stdout, b"ok\n");
    }
}
