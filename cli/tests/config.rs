//! The config file: discovery chain, `-c/--config`, and errors, observed through
//! the address that `rsigma engine status` talks to.

mod common;
mod fake_daemon;

use std::fs;
use std::path::Path;

use fake_daemon::{FakeDaemon, Reply, Sandbox, closed_port, isolated, status_json};
use predicates::prelude::*;

/// A fake daemon answering every request with a status object.
fn daemon() -> FakeDaemon {
    FakeDaemon::always(Reply::json(200, status_json("null")))
}

/// Writes a config file whose API address is `addr`, creating parent directories.
fn write_config(path: &Path, addr: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        path,
        format!("# test config\ndaemon:\n  rules: rules\n  api:\n    addr: {addr}\n"),
    )
    .unwrap();
}

#[test]
fn local_rsigma_yaml_is_discovered_and_wildcard_maps_to_loopback() {
    let daemon = daemon();
    let sandbox = Sandbox::new();
    write_config(
        &sandbox.cwd.path().join("rsigma.yaml"),
        &format!("0.0.0.0:{}", daemon.port()),
    );
    sandbox.rsigma(&["engine", "status"]).assert().success();
    assert_eq!(daemon.lines(), ["GET /api/v1/status"]);
}

#[test]
fn local_file_wins_over_xdg_config_home() {
    let local = daemon();
    let user = daemon();
    let sandbox = Sandbox::new();
    write_config(
        &sandbox.cwd.path().join("rsigma.yaml"),
        &format!("127.0.0.1:{}", local.port()),
    );
    write_config(
        &sandbox.home.path().join(".config/rsigma/config.yaml"),
        &format!("127.0.0.1:{}", user.port()),
    );
    sandbox.rsigma(&["engine", "status"]).assert().success();
    assert_eq!(local.lines().len(), 1);
    assert!(user.lines().is_empty());
}

#[test]
fn xdg_config_home_is_used_without_a_local_file() {
    let daemon = daemon();
    let sandbox = Sandbox::new();
    let xdg = tempfile::tempdir().unwrap();
    write_config(
        &xdg.path().join("rsigma/config.yaml"),
        &format!("127.0.0.1:{}", daemon.port()),
    );
    // A file under $HOME/.config must not be used when XDG_CONFIG_HOME is set.
    write_config(
        &sandbox.home.path().join(".config/rsigma/config.yaml"),
        &format!("127.0.0.1:{}", closed_port()),
    );
    sandbox
        .rsigma(&["engine", "status"])
        .env("XDG_CONFIG_HOME", xdg.path())
        .assert()
        .success();
    assert_eq!(daemon.lines().len(), 1);
}

#[test]
fn home_dot_config_is_used_when_xdg_config_home_is_unset() {
    let daemon = daemon();
    let sandbox = Sandbox::new();
    write_config(
        &sandbox.home.path().join(".config/rsigma/config.yaml"),
        &format!("127.0.0.1:{}", daemon.port()),
    );
    sandbox
        .rsigma(&["config", "reload"])
        .env_remove("XDG_CONFIG_HOME")
        .assert()
        .success();
    assert_eq!(daemon.lines(), ["POST /api/v1/reload"]);
}

#[test]
fn explicit_config_wins_over_discovery() {
    let explicit = daemon();
    let local = daemon();
    let sandbox = Sandbox::new();
    write_config(
        &sandbox.cwd.path().join("rsigma.yaml"),
        &format!("127.0.0.1:{}", local.port()),
    );
    let other = sandbox.cwd.path().join("conf/other.yaml");
    write_config(&other, &format!("http://127.0.0.1:{}", explicit.port()));
    for flag in ["-c", "--config"] {
        sandbox
            .rsigma(&["engine", "status", flag, "conf/other.yaml"])
            .assert()
            .success();
    }
    assert_eq!(explicit.lines().len(), 2);
    assert!(local.lines().is_empty());
}

#[test]
fn addr_flag_wins_over_the_config_file() {
    let flag = daemon();
    let sandbox = Sandbox::new();
    write_config(
        &sandbox.cwd.path().join("rsigma.yaml"),
        &format!("127.0.0.1:{}", closed_port()),
    );
    sandbox
        .rsigma(&["engine", "status", "--addr", &flag.addr().to_string()])
        .assert()
        .success();
    assert_eq!(flag.lines().len(), 1);
}

#[test]
fn config_without_api_addr_uses_the_default_address() {
    let sandbox = Sandbox::new();
    fs::write(
        sandbox.cwd.path().join("rsigma.yaml"),
        "daemon:\n  pretty: true\n",
    )
    .unwrap();
    // Something may listen on 127.0.0.1:9090 on this machine; only check the
    // address when the connection fails.
    let output = sandbox.rsigma(&["engine", "status"]).output().unwrap();
    if output.status.code() == Some(3) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("http://127.0.0.1:9090/"), "{stderr}");
    }
}

#[test]
fn tls_cert_in_config_makes_host_port_https() {
    let daemon = daemon();
    let sandbox = Sandbox::new();
    fs::write(
        sandbox.cwd.path().join("rsigma.yaml"),
        format!(
            "daemon:\n  api: {{addr: \"0.0.0.0:{}\"}}\n  tls: {{cert: server.pem, key: server.key}}\n",
            daemon.port()
        ),
    )
    .unwrap();
    sandbox
        .rsigma(&["engine", "status"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "https://127.0.0.1:{}/",
            daemon.port()
        )));
    assert_eq!(daemon.lines(), ["TLS "]);
}

#[test]
fn missing_explicit_config_is_exit_3_naming_the_file() {
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&["engine", "status", "-c", "nowhere/rsigma.yaml"])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains(
            "the config file 'nowhere/rsigma.yaml' could not be read",
        ));
}

#[test]
fn unknown_key_is_exit_3_naming_the_file_and_line() {
    let sandbox = Sandbox::new();
    let path = sandbox.cwd.path().join("typo.yaml");
    fs::write(
        &path,
        "daemon:\n  rules: rules\n  api:\n    adr: 127.0.0.1:9090\n",
    )
    .unwrap();
    sandbox
        .rsigma(&["config", "reload", "-c", path.to_str().unwrap()])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "invalid config file '{}'",
            path.display()
        )))
        .stderr(predicate::str::contains("line 4"))
        .stderr(predicate::str::contains("unknown field `adr`"));
}

#[test]
fn invalid_discovered_file_is_exit_3_not_ignored() {
    let sandbox = Sandbox::new();
    fs::write(
        sandbox.cwd.path().join("rsigma.yaml"),
        "daemon:\n  buffer_size: [1\n",
    )
    .unwrap();
    sandbox
        .rsigma(&["engine", "status"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "invalid config file './rsigma.yaml'",
        ))
        .stderr(predicate::str::contains("line 2"));

    let sandbox = Sandbox::new();
    let user = sandbox.home.path().join(".config/rsigma/config.yaml");
    fs::create_dir_all(user.parent().unwrap()).unwrap();
    fs::write(&user, "daemon:\n  unknown_setting: 1\n").unwrap();
    sandbox
        .rsigma(&["engine", "status", "--addr", "127.0.0.1:1"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(user.display().to_string()))
        .stderr(predicate::str::contains("unknown_setting"));
}

#[test]
fn invalid_api_addr_in_config_names_the_file() {
    let sandbox = Sandbox::new();
    fs::write(
        sandbox.cwd.path().join("rsigma.yaml"),
        "daemon:\n  api:\n    addr: \"localhost:port\"\n",
    )
    .unwrap();
    sandbox
        .rsigma(&["engine", "status"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "invalid daemon.api.addr 'localhost:port' in the config file './rsigma.yaml'",
        ));
}

#[test]
fn empty_config_file_means_defaults() {
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("rsigma.yaml"), "# nothing yet\n").unwrap();
    isolated(dir.path(), home.path())
        .args(["engine", "status", "--addr", &daemon.addr().to_string()])
        .assert()
        .success();
}
