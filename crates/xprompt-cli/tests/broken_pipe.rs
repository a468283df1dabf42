//! Output into a closed pipe (`xprompt db stats DB | head`) ends the program quietly, not
//! with a "failed printing to stdout" panic.
use std::process::{Command, Stdio};

#[test]
fn closed_stdout_is_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let made = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .args(["db", "create"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(made.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .args(["db", "stats"])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the program writes.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
