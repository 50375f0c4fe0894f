//! A program in a pseudo-terminal, used as a person at a terminal uses it: `script`
//! (util-linux) gives it a pty, so what it reads is typed lines the terminal echoes and what
//! it writes is what the screen shows. The test types at the keyboard and waits, with a
//! deadline, until the text it expects is on the screen.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::ws::RECEIVE_TIMEOUT;

pub struct Terminal {
    script: Child,
    keyboard: ChildStdin,
    screen: ChildStdout,
    /// Everything shown so far, and how much of it the test has already looked at: an
    /// expected text is looked for after the one before it, so the order counts too.
    shown: Vec<u8>,
    looked_at: usize,
}

impl Terminal {
    /// Runs `program ARGS` in a new pseudo-terminal. The caller checks first that `script`
    /// is installed (`skip_without("script", ...)`).
    pub fn start(program: &Path, args: &[&str]) -> Self {
        let words = std::iter::once(program.to_str().expect("utf-8 path")).chain(args.iter().copied());
        let command_line = words.map(shell_quoted).collect::<Vec<_>>().join(" ");
        // -q: no start and end lines; -f: flush at once; -e: exit with the program's status;
        // the transcript file is /dev/null, the screen is read from script's stdout.
        let mut script = Command::new("script")
            .args(["-qfec", &command_line, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start script");
        let keyboard = script.stdin.take().expect("stdin");
        let screen = script.stdout.take().expect("stdout");
        Self { script, keyboard, screen, shown: Vec::new(), looked_at: 0 }
    }

    /// Types `line` and presses Enter.
    pub async fn type_line(&mut self, line: &str) {
        self.keyboard.write_all(format!("{line}\r").as_bytes()).await.expect("type on the terminal");
        self.keyboard.flush().await.expect("type on the terminal");
    }

    /// Waits until each of `texts` is on the screen, in this order, after what the last call
    /// found.
    pub async fn expect(&mut self, texts: &[&str]) {
        for text in texts {
            self.expect_one(text).await;
        }
    }

    async fn expect_one(&mut self, wanted: &str) {
        let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
        loop {
            let unread = &self.shown[self.looked_at..];
            if let Some(at) = unread.windows(wanted.len()).position(|window| window == wanted.as_bytes()) {
                self.looked_at += at + wanted.len();
                return;
            }
            let mut buffer = [0; 4096];
            let read = tokio::time::timeout_at(deadline, self.screen.read(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("{wanted:?} was not shown in time; the screen:\n{}", self.screen_text()))
                .expect("read the terminal");
            assert!(read > 0, "the program ended before showing {wanted:?}; the screen:\n{}", self.screen_text());
            self.shown.extend_from_slice(&buffer[..read]);
        }
    }

    /// Everything the terminal has shown.
    pub fn screen_text(&self) -> String {
        String::from_utf8_lossy(&self.shown).into_owned()
    }

    /// Waits for the program to end, reading the rest of what it shows.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let rest = tokio::time::timeout(RECEIVE_TIMEOUT, self.screen.read_to_end(&mut self.shown));
        rest.await
            .unwrap_or_else(|_| panic!("the program did not end; the screen:\n{}", self.screen_text()))
            .expect("read the terminal");
        tokio::time::timeout(RECEIVE_TIMEOUT, self.script.wait())
            .await
            .expect("the program ends")
            .expect("the exit status")
    }
}

/// `word` as one word of a `sh` command line.
fn shell_quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
