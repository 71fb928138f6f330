//! Running the `vmcloud` binary as an operator would: a command with no
//! configuration inherited from the test run, and a started process whose
//! address is read from its log.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;

use tempfile::TempDir;

/// `vmcloud` in a temp working directory, with no configuration inherited
/// from the environment of the test run.
pub fn vmcloud(dir: &TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmcloud"));
    command.current_dir(dir.path());
    for (key, _) in std::env::vars() {
        if key.starts_with("VMCLOUD_")
            || ["DATABASE_URL", "DATABASE_READ_URL", "REDIS_URL"].contains(&key.as_str())
        {
            command.env_remove(key);
        }
    }
    command
}

/// `vmcloud admin create-user` through `command`, the password on stdin.
pub fn create_user(mut command: Command, email: &str, role: &str, password: &str) -> Output {
    command.args(["admin", "create-user", "--email", email, "--role", role]);
    with_password(command, password)
}

/// Runs `command` with `password` on its standard input.
pub fn with_password(mut command: Command, password: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        format!("{password}\n").as_bytes(),
    )
    .expect("writes");
    child.wait_with_output().expect("exits")
}

/// A started `serve` or `worker`, killed if the test drops it running.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// `host:port` of its HTTP listener.
    pub address: String,
    /// What it logged while starting, up to the address.
    pub start_log: Vec<String>,
    /// Drains the log after the address line, so the process never blocks
    /// on a full pipe; yields those lines once the process exits.
    log: Option<JoinHandle<Vec<String>>>,
}

impl Running {
    /// Starts `command` (bound to a free port, logging at `info`) and waits
    /// for the log line that gives its address.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .env("VMCLOUD_BIND", "127.0.0.1:0")
            .env("VMCLOUD_LOG_LEVEL", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut start_log = Vec::new();
        let address = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let address = line
                    .split(" on http://")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned);
                start_log.push(line);
                address
            })
            .expect("the URL is logged");
        let log = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        Self {
            child,
            address,
            start_log,
            log: Some(log),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops it as SIGTERM does, checks that it exits cleanly, and answers
    /// what it logged after its address.
    pub fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let status = self.child.wait().expect("exits");
        assert!(status.success(), "exit status {status}");
        self.log
            .take()
            .expect("read once")
            .join()
            .expect("log reader")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
