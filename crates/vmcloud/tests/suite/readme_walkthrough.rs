//! The README's first-run walk-through, as written: the binary serves
//! `--demo` from a fresh working directory on its default settings (data
//! directory, accelerator), and the README's own commands, read from its
//! "Set-up" section, create the user, log in, add a key, order the VM, wait
//! for `running` and SSH in. Only the address differs: the server listens on
//! a free port instead of 8080. A change to those commands is a change to
//! this test.
//!
//! Needs the test guest in `VMCLOUD_TEST_GUEST_IMAGE` (`scripts/test` builds
//! it) as the demo image, and `ssh`/`ssh-keygen`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use common::{Running, vmcloud};

use crate::common;

/// The sentence that introduces the walk-through's code block.
const WALKTHROUGH_INTRO: &str = "so keep them runnable as written):";
/// How long the guest may take to be `running` and answer SSH under TCG.
const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// The commands of the walk-through, backslash-continued lines joined.
fn readme_commands() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme).expect("README.md");
    let after_intro = readme
        .split_once(WALKTHROUGH_INTRO)
        .expect("the README introduces its walk-through")
        .1;
    let block = after_intro
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a sh block follows")
        .0;
    block
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One shell word list, with the little of sh the README uses: quotes,
/// `$name`, `$(cat FILE)` with `~` as `home`, and `#` comments (returned
/// apart).
fn shell_words(line: &str, vars: &HashMap<String, String>, home: &Path) -> (Vec<String>, String) {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    let expand = |chars: &mut std::iter::Peekable<std::str::Chars>, word: &mut String| {
        if chars.peek() == Some(&'(') {
            let inner: String = chars.by_ref().skip(1).take_while(|&c| c != ')').collect();
            let file = inner
                .strip_prefix("cat ")
                .expect("only $(cat FILE) is substituted");
            let file = file.replacen('~', &home.display().to_string(), 1);
            word.push_str(std::fs::read_to_string(&file).expect("file").trim_end());
        } else {
            let mut name = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
            {
                name.push(c);
                chars.next();
            }
            word.push_str(
                vars.get(&name)
                    .unwrap_or_else(|| panic!("${name} is unset")),
            );
        }
    };
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if first == '#' {
            return (words, chars.skip(1).collect::<String>().trim().to_owned());
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_whitespace() => break,
                '\'' => word.extend(chars.by_ref().take_while(|&c| c != '\'')),
                '"' => {
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => word.push(chars.next().expect("escaped character")),
                            '$' => expand(&mut chars, &mut word),
                            c => word.push(c),
                        }
                    }
                }
                '$' => expand(&mut chars, &mut word),
                c => word.push(c),
            }
        }
        words.push(word);
    }
    (words, String::new())
}

/// Runs a `curl` word list: `-s URL [-H HEADER]... [-d BODY]`.
async fn curl(http: &reqwest::Client, words: &[String]) -> Value {
    assert_eq!(words[..2], ["curl", "-s"], "{words:?}");
    let mut rest = words[3..].iter();
    let (mut headers, mut body) = (Vec::new(), None);
    while let Some(flag) = rest.next() {
        let value = rest.next().expect("a flag's value").clone();
        match flag.as_str() {
            "-H" => headers.push(value),
            "-d" => body = Some(value),
            other => panic!("curl {other} is not understood by this test"),
        }
    }
    let mut request = match body {
        Some(body) => http.post(&words[2]).body(body),
        None => http.get(&words[2]),
    };
    for header in headers {
        let (name, value) = header.split_once(": ").expect("name: value");
        request = request.header(name, value);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let json: Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{words:?}: {status} {json}");
    json
}

/// Whether `json` through jq `filter` shows what `until` (a step's comment)
/// waits for: `until "STATUS"` after `{status, …}`, or `until it lists SLUG`
/// after `.[].slug`.
fn shows(json: &Value, filter: &str, until: &str) -> bool {
    let until = until.strip_prefix("until ").expect("# until …");
    match (filter, until.strip_prefix("it lists ")) {
        (".[].slug", Some(slug)) => json
            .as_array()
            .expect("a list")
            .iter()
            .any(|item| item["slug"] == slug),
        (object, None) if object.starts_with("{status") => {
            json["status"] == until.trim_matches('"')
        }
        _ => panic!("jq {filter} # until {until}: not understood by this test"),
    }
}

/// `jq -r .field`, the only filter the walk-through assigns from.
fn jq_field(json: &Value, words: &[String]) -> String {
    assert_eq!(words[..2], ["jq", "-r"], "{words:?}");
    let field = words[2].strip_prefix('.').expect(".field");
    json[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {json}"))
        .to_owned()
}

fn ssh_keygen(home: &Path) -> PathBuf {
    let dir = home.join(".ssh");
    std::fs::create_dir_all(&dir).expect("~/.ssh");
    let key = dir.join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs");
    assert!(made.success());
    key
}

#[tokio::test]
async fn the_readme_walk_through_works_as_written() {
    let Some(guest) = std::env::var_os("VMCLOUD_TEST_GUEST_IMAGE") else {
        eprintln!("\n*** SKIPPED README walk-through: set VMCLOUD_TEST_GUEST_IMAGE ***\n");
        return;
    };
    let workdir = TempDir::new().expect("working directory");
    let home = TempDir::new().expect("home");
    let key = ssh_keygen(home.path());
    let mut serve = vmcloud(&workdir);
    serve
        .args(["serve", "--demo", "--demo-image"])
        .arg(&guest)
        .env_remove("VMCLOUD_LOG_LEVEL");
    let server = Running::start(serve);

    let http = reqwest::Client::new();
    let mut vars = HashMap::new();
    let mut last_json = Value::Null;
    let mut commands = readme_commands().into_iter();

    let create_user = commands.next().expect("the create-user line");
    let (password, command) = create_user.split_once(" | ").expect("echo … | vmcloud …");
    let (password, _) = shell_words(password, &vars, home.path());
    let (args, _) = shell_words(command, &vars, home.path());
    assert_eq!(password[0], "echo");
    assert!(args[0].ends_with("/vmcloud"), "{args:?}");
    let mut child = vmcloud(&workdir)
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("create-user runs");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        format!("{}\n", password[1]).as_bytes(),
    )
    .expect("password");
    let created = child.wait_with_output().expect("create-user exits");
    assert!(created.status.success(), "{created:?}");
    assert_eq!(String::from_utf8_lossy(&created.stderr), "", "no log lines");

    for line in commands {
        if let Some(url) = line.strip_prefix("api=") {
            let path = url
                .strip_prefix("http://127.0.0.1:8080")
                .expect("the README's address");
            vars.insert("api".to_owned(), server.url(path));
        } else if let Some((name, inner)) = line
            .split_once("=$(")
            .and_then(|(name, rest)| Some((name, rest.strip_suffix(')')?)))
        {
            let (curl_part, jq_part) = inner.split_once(" | ").expect("curl … | jq …");
            let (curl_words, _) = shell_words(curl_part, &vars, home.path());
            let (jq_words, _) = shell_words(jq_part, &vars, home.path());
            let json = curl(&http, &curl_words).await;
            vars.insert(name.to_owned(), jq_field(&json, &jq_words));
        } else if line.starts_with("curl ") {
            // A step repeated until its output shows what its comment says.
            let (pipeline, _) = line.split_once(" | ").expect("curl … | jq …");
            let (words, until) = shell_words(&line, &vars, home.path());
            let (curl_words, _) = shell_words(pipeline, &vars, home.path());
            let filter = words.last().expect("a jq filter");
            last_json = tokio::time::timeout(BOOT_LIMIT, async {
                loop {
                    let json = curl(&http, &curl_words).await;
                    if shows(&json, filter, &until) {
                        return json;
                    }
                    assert_ne!(json["status"], "error", "the VM failed: {json}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{line}: in time"));
        } else if line.starts_with("ssh ") {
            let (words, comment) = shell_words(&line, &vars, home.path());
            let expected = comment.strip_prefix("prints ").expect("# prints …");
            let port = last_json["ssh"]["port"].to_string();
            let mut ssh = tokio::process::Command::new("ssh");
            ssh.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
                .args([
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "ConnectTimeout=10",
                ])
                .args(["-o", "LogLevel=ERROR", "-i"])
                .arg(&key)
                .args(words[1..].iter().map(|w| w.replace("<ssh.port>", &port)));
            let answered = tokio::time::timeout(BOOT_LIMIT, async {
                loop {
                    let output = ssh.output().await.expect("ssh runs");
                    if output.status.success() {
                        return String::from_utf8_lossy(&output.stdout).trim().to_owned();
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
            .await
            .expect("the guest answers SSH in time");
            assert_eq!(answered, expected);
        } else {
            panic!("the walk-through has a step this test does not run: {line}");
        }
    }
    assert_eq!(last_json["status"], "running", "the walk-through waited");
    delete_instance(&http, &vars).await;
    server.terminate();
}

/// Beyond the README: the VM is deleted, so no QEMU outlives the test.
async fn delete_instance(http: &reqwest::Client, vars: &HashMap<String, String>) {
    let instance = format!("{}/instances/{}", vars["api"], vars["id"]);
    let bearer = format!("Bearer {}", vars["token"]);
    let deletion: Value = http
        .delete(&instance)
        .header("authorization", &bearer)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("the deletion is accepted")
        .json()
        .await
        .expect("JSON");
    let action = format!(
        "{instance}/actions/{}",
        deletion["id"].as_str().expect("id")
    );
    let finished = tokio::time::timeout(BOOT_LIMIT, async {
        loop {
            let action: Value = http
                .get(&action)
                .header("authorization", &bearer)
                .send()
                .await
                .expect("answers")
                .json()
                .await
                .expect("JSON");
            if matches!(action["status"].as_str(), Some("succeeded" | "failed")) {
                return action;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
    .expect("the deletion finishes in time");
    assert_eq!(finished["status"], "succeeded", "{finished}");
}
