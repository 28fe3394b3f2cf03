//! `portcullis check`: every bundled example parses; a broken file names its problems.

use std::process::Command;

use crate::harness::{DEMO_UPSTREAM, Gateway, portcullis, workspace};

#[test]
fn every_example_config_passes_check() {
    let dir = workspace().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(portcullis()).args(["check", "--config"]).arg(&path).output().expect("run check");
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no example configs found");
}

#[test]
fn check_reports_every_problem_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[upstream]]\nname = \"a b\"\ntransport = \"stdio\"\ncommand = \"x\"\n\n[[route]]\npath = \"/mcp\"\nupstreams = [\"missing\"]\n",
    )
    .expect("write");
    let out = Command::new(portcullis()).args(["check", "--config"]).arg(&path).output().expect("run check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2: upstream[0].name"), "{err}");
    assert!(err.contains("bad.toml:8: route[0].upstreams: no upstream is named 'missing'"), "{err}");
}

#[test]
fn check_rejects_unknown_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[gateway]\nrequest_timeot = \"5s\"\n").expect("write");
    let out = Command::new(portcullis()).args(["check", "--config"]).arg(&path).output().expect("run check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.toml:2:") && err.contains("unknown field `request_timeot`"), "{err}");
}

#[test]
fn worker_threads_size_the_runtime() {
    for (setting, expected) in [("worker_threads = 3\n", "workers=3"), ("worker_threads = 1\n", "workers=1")] {
        let gw = Gateway::start(&format!(
            "[gateway]\n{setting}{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n"
        ));
        let log = gw.log();
        assert!(log.contains(expected), "{expected} not in:\n{log}");
    }
}
