//! `spec.enrichment` of a `DetectionEngine`: the enrichers file and source
//! declaration files, each a key of a ConfigMap or Secret mounted whole into
//! the daemon pods, and the daemon flags that name them.
//!
//! The operator never reads these objects (it needs no access to Secrets):
//! the kubelet keeps the mounts current, and each daemon's file watcher
//! reloads the enrichers when their file changes, as for rules.

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, SecretVolumeSource, Volume};
use rsigma_crds::DetectionEngine;
use rsigma_crds::detectionengine::FileRef;

use crate::resources::{PodParts, read_only_mount};

/// Where the enrichers file's object is mounted.
pub const ENRICHERS_DIR: &str = "/etc/rsigma/enrichers";
/// Where source file `N`'s object is mounted: `SOURCES_DIR/N`.
pub const SOURCES_DIR: &str = "/etc/rsigma/sources";

/// Whether a pod volume name is one of the enrichment's.
pub fn is_enrichment_volume(name: &str) -> bool {
    name == "enrichers"
        || name
            .strip_prefix("source-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The arguments, volumes (`enrichers`, `source-0`, `source-1`, ...) and
/// mounts of `engine`'s `spec.enrichment` (empty without it).
pub fn pod_parts(engine: &DetectionEngine) -> PodParts {
    let mut pod = PodParts::default();
    let Some(enrichment) = &engine.spec.enrichment else {
        return pod;
    };
    if let Some(file) = &enrichment.enrichers {
        mount(&mut pod, "enrichers", ENRICHERS_DIR, file);
        pod.args.extend([
            "--enrichers".to_owned(),
            format!("{ENRICHERS_DIR}/{}", file.key),
        ]);
    }
    for (n, file) in enrichment.sources.iter().enumerate() {
        let dir = format!("{SOURCES_DIR}/{n}");
        mount(&mut pod, &format!("source-{n}"), &dir, file);
        pod.args
            .extend(["--source".to_owned(), format!("{dir}/{}", file.key)]);
    }
    if enrichment.allow_remote_include {
        pod.args.push("--allow-remote-include".to_owned());
    }
    pod
}

/// Mounts the whole object holding `file` (so that its other keys are the
/// file's siblings, and kubelet updates reach it: no `subPath`).
fn mount(pod: &mut PodParts, volume: &str, dir: &str, file: &FileRef) {
    let mut source = Volume {
        name: volume.to_owned(),
        ..Default::default()
    };
    match (&file.config_map, &file.secret) {
        (Some(name), _) => {
            source.config_map = Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..Default::default()
            });
        }
        (None, Some(name)) => {
            source.secret = Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                ..Default::default()
            });
        }
        (None, None) => return,
    }
    pod.volumes.push(source);
    pod.mounts.push(read_only_mount(volume, dir));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsigma_crds::DetectionEngineSpec;
    use rsigma_crds::detectionengine::EnrichmentSpec;

    fn file(config_map: Option<&str>, secret: Option<&str>, key: &str) -> FileRef {
        FileRef {
            config_map: config_map.map(str::to_owned),
            secret: secret.map(str::to_owned),
            key: key.to_owned(),
        }
    }

    #[test]
    fn mounts_and_flags() {
        let mut spec = DetectionEngineSpec::with_image("rsigma:test");
        spec.enrichment = Some(EnrichmentSpec {
            enrichers: Some(file(Some("enrichers"), None, "enrichers.yaml")),
            sources: vec![
                file(Some("lists"), None, "sources.yaml"),
                file(None, Some("feeds"), "feeds.yaml"),
            ],
            allow_remote_include: true,
        });
        let engine = DetectionEngine::new("edge", spec);
        let pod = pod_parts(&engine);
        assert_eq!(
            pod.args,
            [
                "--enrichers",
                "/etc/rsigma/enrichers/enrichers.yaml",
                "--source",
                "/etc/rsigma/sources/0/sources.yaml",
                "--source",
                "/etc/rsigma/sources/1/feeds.yaml",
                "--allow-remote-include",
            ]
        );
        let names: Vec<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["enrichers", "source-0", "source-1"]);
        assert_eq!(
            pod.volumes[0].config_map.as_ref().unwrap().name,
            "enrichers"
        );
        assert_eq!(
            pod.volumes[2]
                .secret
                .as_ref()
                .unwrap()
                .secret_name
                .as_deref(),
            Some("feeds")
        );
        assert!(
            pod.mounts
                .iter()
                .all(|m| m.read_only == Some(true) && m.sub_path.is_none())
        );
        assert!(is_enrichment_volume("source-12") && is_enrichment_volume("enrichers"));
        assert!(!is_enrichment_volume("source-") && !is_enrichment_volume("sources"));
        let plain = DetectionEngine::new("plain", DetectionEngineSpec::with_image("rsigma:test"));
        assert_eq!(pod_parts(&plain), PodParts::default());
    }
}
