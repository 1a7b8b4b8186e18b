//! Where risctl finds the API and its key.
//!
//! `risctl configure --api URL --key KEY` saves both to a JSON file, mode 0600 (the key
//! is a credential). Each command then resolves them flag first, then environment
//! (`RIS_API`, `RIS_KEY`, which clap folds into the flags), then that file.
//!
//! The file is `$RISCTL_CONFIG`, else `$XDG_CONFIG_HOME/risctl/config.json`, else
//! `$HOME/.config/risctl/config.json`. The environment is read through a lookup
//! function so tests pass a map instead of mutating the process environment.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// Names the config file, overriding the default location.
pub const CONFIG_ENV: &str = "RISCTL_CONFIG";

/// What `risctl configure` saves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The API to talk to and the key to present, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    pub key: String,
}

/// The config file's path, given an environment lookup.
pub fn config_path(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(path) = non_empty(CONFIG_ENV) {
        return Ok(PathBuf::from(path));
    }
    let base = match (non_empty("XDG_CONFIG_HOME"), non_empty("HOME")) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => Path::new(&home).join(".config"),
        (None, None) => bail!("cannot locate the config file: set {CONFIG_ENV} or HOME"),
    };
    Ok(base.join("risctl").join("config.json"))
}

/// The process environment, for [`config_path`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        match fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("config file {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file with mode 0600 (its directory, when created, 0700).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // `mode` applies only when the file is created; tighten an existing one too.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        Ok(())
    }

    /// Flags and environment (`flag_*`) win over the file.
    pub fn resolve(
        &self,
        flag_api: Option<&str>,
        flag_key: Option<&str>,
    ) -> anyhow::Result<Target> {
        let pick = |flag: Option<&str>, saved: &Option<String>| {
            flag.map(str::to_owned)
                .or_else(|| saved.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let Some(api) = pick(flag_api, &self.api) else {
            bail!("no API URL: pass --api, set RIS_API, or run `risctl configure`");
        };
        let Some(key) = pick(flag_key, &self.key) else {
            bail!("no API key: pass --key, set RIS_KEY, or run `risctl configure`");
        };
        Ok(Target {
            api: normalize_api(&api)?,
            key: key.trim().to_owned(),
        })
    }
}

/// Checks the scheme and drops trailing slashes, so paths can be appended.
pub fn normalize_api(api: &str) -> anyhow::Result<String> {
    let api = api.trim().trim_end_matches('/');
    if !(api.starts_with("http://") || api.starts_with("https://")) {
        bail!("API URL `{api}` must start with http:// or https://");
    }
    Ok(api.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn path_prefers_override_then_xdg_then_home() {
        let all = [
            ("RISCTL_CONFIG", "/x/c.json"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(config_path(env(&all)).unwrap(), Path::new("/x/c.json"));
        assert_eq!(
            config_path(env(&all[1..])).unwrap(),
            Path::new("/xdg/risctl/config.json")
        );
        assert_eq!(
            config_path(env(&all[2..])).unwrap(),
            Path::new("/home/u/.config/risctl/config.json")
        );
        assert!(config_path(env(&[])).is_err());
    }

    #[test]
    fn save_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let config = Config {
            api: Some("http://h:1".into()),
            key: Some("k".into()),
        };
        config.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Config::load(&path).unwrap(), config);
    }

    #[test]
    fn flags_win_over_the_file() {
        let saved = Config {
            api: Some("http://saved:1/".into()),
            key: Some("saved-key".into()),
        };
        let t = saved.resolve(None, None).unwrap();
        assert_eq!(
            (t.api.as_str(), t.key.as_str()),
            ("http://saved:1", "saved-key")
        );
        let t = saved
            .resolve(Some("https://flag"), Some("flag-key"))
            .unwrap();
        assert_eq!(
            (t.api.as_str(), t.key.as_str()),
            ("https://flag", "flag-key")
        );
        let err = Config::default().resolve(None, None).unwrap_err();
        assert!(err.to_string().contains("risctl configure"), "{err}");
        assert!(saved.resolve(Some("ftp://x"), None).is_err());
    }
}
