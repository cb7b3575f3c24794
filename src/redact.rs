//! Secrets never leave the process in text: every message c360 prints (errors, progress,
//! the run summary) and every report it writes passes through [`redact`], which hides the
//! credentials it knows of (the `AWS_*` secrets in the environment, secret storage options
//! of the project) and the password part of any URL.

use std::sync::{LazyLock, RwLock};

use regex::Regex;

static SECRETS: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| {
    let from_env = std::env::vars()
        .filter(|(k, _)| is_secret_key(k))
        .map(|(_, v)| v)
        .filter(|v| v.len() >= 4)
        .collect();
    RwLock::new(from_env)
});

static USERINFO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@").expect("valid regex"));

/// Whether a setting named `key` holds a credential.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "account_key", "sas_key"]
        .iter()
        .any(|s| k.contains(s))
}

/// Remembers `value` as a secret to hide from now on.
pub fn register(value: &str) {
    if value.len() < 4 {
        return;
    }
    if let Ok(mut secrets) = SECRETS.write() {
        if !secrets.iter().any(|s| s == value) {
            secrets.push(value.to_string());
        }
    }
}

/// `text` with every known secret and every URL's user information replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = USERINFO.replace_all(text, "$1***@").into_owned();
    if let Ok(secrets) = SECRETS.read() {
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_registered_secrets_and_url_passwords() {
        register("hunter2-secret");
        assert_eq!(
            redact("s3://AKIA:hunter2-secret@bucket/x failed: key hunter2-secret"),
            "s3://***@bucket/x failed: key ***"
        );
        assert_eq!(redact("file:///tmp/out"), "file:///tmp/out");
        assert!(is_secret_key("aws_secret_access_key") && is_secret_key("AWS_SESSION_TOKEN"));
        assert!(!is_secret_key("aws_region"));
    }
}
