//! URLs as they may be shown: in a log line, an error message or `status`. A password can sit in
//! a URL's userinfo (`postgres://u:pw@db/x`, `https://user:pw@registry/`) or, as libpq allows, in
//! its query string (`postgres://db/x?password=pw`); both are replaced by `***`.

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query parameters whose value is a secret. libpq reads `password` and `sslpassword` (the
/// passphrase of `sslkey`); `sslkey` and `sslcert` are file paths, not secrets.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// `url` with the password of its userinfo and the values of secret query parameters replaced by
/// `***`; the user name stays (it says which role or account is meant). `None` when `url` does not
/// parse: then nothing of it may be shown.
pub fn url(url: &str) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    if parsed.password().is_some() {
        // Only URLs that cannot have a host refuse a password; those have none to hide.
        let _ = parsed.set_password(Some(MASK));
    }
    if parsed.query_pairs().any(|(key, _)| is_secret_param(&key)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_param(&key) {
                    MASK.to_string()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(parsed.to_string())
}

/// `url` without any userinfo at all: for a registry URL, where even the user name may be a
/// token (`https://TOKEN@registry/`). Secret query values are masked as by [`url`].
pub fn registry_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_password(None);
                let _ = parsed.set_username(MASK);
            }
            url(parsed.as_str()).unwrap_or_else(|| "(unparsable URL)".into())
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

fn is_secret_param(key: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_userinfo_and_query_are_masked_and_the_rest_kept() {
        assert_eq!(
            url("postgres://u:secret@db:5432/x").as_deref(),
            Some("postgres://u:***@db:5432/x")
        );
        assert_eq!(
            url("postgres://u@db/x?sslmode=require&password=secret&application_name=rr").as_deref(),
            Some("postgres://u@db/x?sslmode=require&password=***&application_name=rr")
        );
        assert_eq!(
            url("postgresql://db/x?PassWord=s%20ecret&sslpassword=k").as_deref(),
            Some("postgresql://db/x?PassWord=***&sslpassword=***")
        );
        assert_eq!(
            url("postgres://u@db/x").as_deref(),
            Some("postgres://u@db/x")
        );
        assert_eq!(url("not a url"), None);
    }

    #[test]
    fn registry_userinfo_goes_entirely() {
        for raw in [
            "https://user:pw-secret@registry.internal:5000/",
            "https://pw-secret@registry.internal:5000/",
            "https://user:pw-secret@registry.internal:5000/?password=pw-secret",
        ] {
            let shown = registry_url(raw);
            assert!(!shown.contains("pw-secret"), "{shown}");
            assert!(!shown.contains("user"), "{shown}");
            assert!(
                shown.starts_with("https://***@registry.internal:5000/"),
                "{shown}"
            );
        }
        assert_eq!(
            registry_url("http://127.0.0.1:5000"),
            "http://127.0.0.1:5000/"
        );
    }
}
