//! What a DetectionEngine's NATS settings add to its daemon pods: the
//! `--input`, TLS and consumer-group arguments, the credentials as
//! environment variables from Secrets or as a mounted file (never as
//! arguments), and the Secret volumes (docs/nats.md, docs/operator.md).

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;
use rsigma_crds::{DetectionEngine, InputType, NatsConnectionSpec};

use crate::resources::{PodParts, read_only_mount, secret_volume};
use sha2::{Digest, Sha256};

/// Where the credentials file is mounted.
pub const CREDENTIALS_DIR: &str = "/etc/rsigma/nats";
/// Where the client certificate is mounted.
pub const CLIENT_TLS_DIR: &str = "/etc/rsigma/nats-tls";
/// Where the CA bundle is mounted.
pub const CA_DIR: &str = "/etc/rsigma/nats-ca";

/// The durable consumer an engine's pods share when the spec names none:
/// `rsigma-NAMESPACE-NAME`, shortened with a hash of both past the 64
/// characters a consumer name may have (names of letters, digits, `-`).
pub fn default_consumer_group(namespace: &str, name: &str) -> String {
    let full = format!("rsigma-{namespace}-{name}").replace('.', "-");
    if full.len() <= 64 {
        return full;
    }
    let hash = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let suffix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{suffix}", &full[..55])
}

/// Why an engine's NATS settings would give a daemon that refuses to
/// start (the CRD's rules cannot check subjects token by token, and older
/// API servers do not enforce them at all).
pub fn check(engine: &DetectionEngine) -> Result<(), String> {
    let spec = &engine.spec;
    let deprecated_creds = spec
        .input
        .nats
        .as_ref()
        .is_some_and(|n| n.credentials_secret_ref.is_some());
    if let Some(input) = &spec.input.nats {
        if !rsigma_crds::detectionengine::is_nats_server_url(&input.url) {
            return Err(format!(
                "input.nats.url {:?} must be nats://HOST[:PORT] or tls://HOST[:PORT]",
                input.url
            ));
        }
        check_server(&input.url)?;
        check_subject(&input.subject, true)
            .map_err(|why| format!("input.nats.subject {:?}: {why}", input.subject))?;
    }
    for output in &spec.outputs {
        if let Some(rest) = output.strip_prefix("nats://") {
            let (server, subject) = rest.split_once('/').unwrap_or((rest, ""));
            check_server(&format!("nats://{server}"))?;
            check_subject(subject, false).map_err(|why| format!("output {output:?}: {why}"))?;
        }
    }
    let connection = spec.nats.clone().unwrap_or_default();
    let mut methods = connection.methods();
    if deprecated_creds {
        methods.push("input.nats.credentialsSecretRef");
    }
    if methods.len() > 1 {
        return Err(format!(
            "set at most one NATS authentication method, not {}",
            methods.join(" and ")
        ));
    }
    if connection.user_secret_ref.is_some() != connection.password_secret_ref.is_some() {
        return Err("nats: userSecretRef and passwordSecretRef go together".to_owned());
    }
    // A replay restarts the durable consumer at every pod start: with
    // several pods sharing it, each start would rewind the others.
    if spec.replicas > 1
        && spec
            .extra_args
            .iter()
            .any(|arg| arg.starts_with("--replay-from-"))
    {
        return Err(
            "extraArgs: --replay-from-* restarts the shared consumer at every pod start; replay with one replica"
                .to_owned(),
        );
    }
    Ok(())
}

/// `HOST[:PORT]` with a port of 1-65535 when given.
fn check_server(url: &str) -> Result<(), String> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let port = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").map(|(_, port)| port),
        None => authority.split_once(':').map(|(_, port)| port),
    };
    match port.map(|p| p.parse::<u16>()) {
        None | Some(Ok(1..)) => Ok(()),
        Some(_) => Err(format!("{url}: invalid port")),
    }
}

/// Dot-separated tokens, none empty or with whitespace; `*` and `>` only
/// as whole tokens of an input, `>` last.
fn check_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (index, token) in tokens.iter().enumerate() {
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            return Err("tokens must be non-empty and without whitespace".to_owned());
        }
        let wildcard = *token == "*" || *token == ">";
        if !wildcard && (token.contains('*') || token.contains('>')) {
            return Err("wildcards must be whole tokens".to_owned());
        }
        if wildcard && !wildcards {
            return Err("an output publishes to one subject, without wildcards".to_owned());
        }
        if *token == ">" && index + 1 != tokens.len() {
            return Err("'>' must be the last token".to_owned());
        }
    }
    Ok(())
}

/// The NATS arguments, environment and volumes of `engine`'s pods (empty
/// for an engine without NATS input or outputs).
pub fn pod_parts(engine: &DetectionEngine) -> PodParts {
    let spec = &engine.spec;
    let mut pod = PodParts::default();
    if let (InputType::Nats, Some(input)) = (spec.input.type_, &spec.input.nats) {
        let (scheme_tls, server) = match input.url.strip_prefix("tls://") {
            Some(server) => (true, server),
            None => (false, input.url.trim_start_matches("nats://")),
        };
        pod.args.push("--input".to_owned());
        pod.args.push(format!(
            "nats://{}/{}",
            server.trim_end_matches('/'),
            input.subject
        ));
        if scheme_tls {
            pod.args.push("--nats-require-tls".to_owned());
        }
        let group = input.consumer_group.clone().unwrap_or_else(|| {
            default_consumer_group(&engine.namespace().unwrap_or_default(), &engine.name_any())
        });
        pod.args.extend(["--consumer-group".to_owned(), group]);
    }
    let connection = spec.nats.clone().unwrap_or_default();
    // The deprecated place of the credentials file.
    let credentials = connection.credentials_secret_ref.clone().or_else(|| {
        spec.input
            .nats
            .as_ref()
            .and_then(|n| n.credentials_secret_ref.clone())
    });
    if let Some(creds) = &credentials {
        mount_key(
            &mut pod,
            "nats-credentials",
            CREDENTIALS_DIR,
            creds,
            "credentials.creds",
        );
        pod.args.push("--nats-creds".to_owned());
        pod.args
            .push(format!("{CREDENTIALS_DIR}/credentials.creds"));
    }
    add_secret_env(&mut pod, &connection);
    if let Some(secret) = &connection.tls_secret_name {
        pod.volumes.push(secret_volume(
            "nats-tls",
            secret,
            &[("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
        ));
        pod.mounts.push(read_only_mount("nats-tls", CLIENT_TLS_DIR));
        pod.args.extend([
            "--nats-tls-cert".to_owned(),
            format!("{CLIENT_TLS_DIR}/tls.crt"),
            "--nats-tls-key".to_owned(),
            format!("{CLIENT_TLS_DIR}/tls.key"),
        ]);
    }
    if let Some(ca) = &connection.ca_secret_ref {
        mount_key(&mut pod, "nats-ca", CA_DIR, ca, "ca.crt");
        pod.args
            .extend(["--nats-tls-ca".to_owned(), format!("{CA_DIR}/ca.crt")]);
    }
    if connection.require_tls && !pod.args.iter().any(|a| a == "--nats-require-tls") {
        pod.args.push("--nats-require-tls".to_owned());
    }
    pod
}

/// The token, user, password and NKey seed, as the environment variables
/// the daemon reads them from.
fn add_secret_env(pod: &mut PodParts, connection: &NatsConnectionSpec) {
    for (variable, selector) in [
        ("NATS_TOKEN", &connection.token_secret_ref),
        ("NATS_USER", &connection.user_secret_ref),
        ("NATS_PASSWORD", &connection.password_secret_ref),
        ("NATS_NKEY", &connection.nkey_secret_ref),
    ] {
        if let Some(selector) = selector {
            pod.env.push(EnvVar {
                name: variable.to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(selector.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
}

fn mount_key(
    pod: &mut PodParts,
    volume: &str,
    dir: &str,
    selector: &SecretKeySelector,
    file: &str,
) {
    pod.volumes.push(secret_volume(
        volume,
        &selector.name,
        &[(&selector.key, file)],
    ));
    pod.mounts.push(read_only_mount(volume, dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_servers_the_daemon_would_refuse() {
        assert_eq!(check_subject("events.>", true), Ok(()));
        assert_eq!(check_subject("a.*.c", true), Ok(()));
        assert!(check_subject("a..b", true).is_err());
        assert!(check_subject("a.>.b", true).is_err());
        assert!(check_subject("a b", true).is_err());
        assert!(check_subject("ab*", true).is_err());
        assert!(check_subject("detections.*", false).is_err());
        assert_eq!(check_subject("detections", false), Ok(()));
        assert_eq!(check_server("nats://h"), Ok(()));
        assert_eq!(check_server("tls://h:4222"), Ok(()));
        assert_eq!(check_server("nats://[fd00::1]:4222"), Ok(()));
        assert!(check_server("nats://h:0").is_err());
        assert!(check_server("nats://h:x").is_err());
    }

    #[test]
    fn default_consumer_groups_are_valid_consumer_names() {
        assert_eq!(default_consumer_group("soc", "edge"), "rsigma-soc-edge");
        let long = default_consumer_group(&"n".repeat(63), &"e.x".repeat(80));
        assert_eq!(long.len(), 64);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{long}"
        );
        assert_ne!(
            long,
            default_consumer_group(&"n".repeat(63), &"e.y".repeat(80))
        );
    }
}
