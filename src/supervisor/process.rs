//! Merging a spec with its image's defaults into the process to run (pure).

use crate::image::ImageDefaults;
use crate::model::{ContainerSpec, ProcessConfig, SpecError};
use crate::runtime::init::DEFAULT_PATH;

/// The spec's `command` replaces Entrypoint+Cmd; `env` overrides the image's
/// variables one by one; `workdir` and `user` replace the image's.
pub fn merge(spec: &ContainerSpec, img: &ImageDefaults) -> Result<ProcessConfig, SpecError> {
    let argv = match &spec.command {
        Some(c) => c.clone(),
        None => img.entrypoint.iter().chain(&img.cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(SpecError::new(
            "command",
            "the image has no Entrypoint or Cmd: give a command",
        ));
    }
    let mut env: Vec<(String, String)> = img
        .env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in &spec.env {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), spec.name.clone()));
    }
    Ok(ProcessConfig {
        argv,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: spec
            .workdir
            .clone()
            .or_else(|| img.workdir.clone())
            .unwrap_or_else(|| "/".into()),
        user: spec.user.clone().or_else(|| img.user.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &[u8]) -> Result<ContainerSpec, serde_json::Error> {
        serde_json::from_slice(json)
    }

    #[test]
    fn spec_overrides_image() {
        let spec = parse(br#"{"name":"a","image":"x","env":{"A":"2","B":"3"}}"#).unwrap();
        let img = ImageDefaults {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec!["A=1".into(), "PATH=/bin".into()],
            workdir: Some("/srv".into()),
            user: Some("1000".into()),
        };
        let p = merge(&spec, &img).unwrap();
        assert_eq!(p.argv, vec!["/bin/app", "--serve"]);
        assert_eq!(p.env, vec!["A=2", "PATH=/bin", "B=3", "HOSTNAME=a"]);
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.user.as_deref(), Some("1000"));
        let spec = parse(br#"{"name":"a","image":"x","command":["sh"]}"#).unwrap();
        assert_eq!(merge(&spec, &img).unwrap().argv, vec!["sh"]);
        assert_eq!(
            merge(&spec, &ImageDefaults::default()).unwrap().env[0],
            format!("PATH={DEFAULT_PATH}")
        );
        let spec = parse(br#"{"name":"a","image":"x"}"#).unwrap();
        assert_eq!(
            merge(&spec, &ImageDefaults::default()).unwrap_err().field,
            "command"
        );
    }
}
