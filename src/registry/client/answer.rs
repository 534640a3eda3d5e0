//! Reading one answer of the registry within bounds: the body no longer than a page may take,
//! the `last` marker of a `Link` header, a `Location` as it may be shown.

use reqwest::header::{HeaderMap, LINK};

/// A `Location` as it may be shown: without user name, password, query or fragment.
pub(super) fn shown_location(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        // A relative Location: its path is all there is to show.
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_string(),
    }
}

/// The most an answer's body may take for a page of `page_size` entries: 1 KiB per entry (an entry
/// with the longest paths the registry allows is about 650 bytes) and 64 KiB for the rest. A
/// registry that sends more is broken or hostile, and is not given the memory to prove it.
pub(super) fn max_body(page_size: u32) -> usize {
    (page_size as usize)
        .saturating_mul(1024)
        .saturating_add(64 * 1024)
}

/// An answer's body, read no further than a bound.
pub(super) enum Body {
    Read(Vec<u8>),
    /// Longer than the bound: said so by `Content-Length` (then nothing was read), or found so
    /// while reading (then reading stopped there).
    TooLong {
        declared: Option<u64>,
    },
}

/// Reads `response`'s body chunk by chunk, stopping as soon as it would pass `limit` bytes.
pub(super) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Body, reqwest::Error> {
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit as u64) {
        return Ok(Body::TooLong { declared });
    }
    let expected = declared.map_or(16 * 1024, |length| length as usize);
    let mut body = Vec::with_capacity(expected.min(limit));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(Body::TooLong { declared: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Read(body))
}

/// The `last` query value of a `Link: <URL>; rel="next"` header, if there is one.
pub(super) fn next_marker(headers: &HeaderMap) -> Result<Option<String>, String> {
    for value in headers.get_all(LINK) {
        let text = value
            .to_str()
            .map_err(|_| "Link header is not ASCII".to_string())?;
        for link in text.split(',') {
            let mut parts = link.split(';').map(str::trim);
            let target = parts.next().unwrap_or_default();
            let is_next = parts.any(|p| {
                let p = p.replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if !is_next {
                continue;
            }
            let inner = target
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .ok_or_else(|| format!("Link target `{target}` is not in angle brackets"))?;
            // The target may be relative; only its query matters.
            let parsed = url::Url::parse("http://registry.invalid/")
                .and_then(|base| base.join(inner))
                .map_err(|e| format!("Link target `{inner}` is not a URL: {e}"))?;
            let last = parsed
                .query_pairs()
                .find(|(k, _)| k == "last")
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| format!("Link target `{inner}` has no `last` parameter"))?;
            return Ok(Some(last));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn link(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(LINK, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn only_the_last_value_of_a_next_link_is_taken() {
        let h = link("<https://evil.example/gitlab/v1/repository-paths/a/repositories/list/?n=2&last=a%2Fb>; rel=\"next\"");
        assert_eq!(next_marker(&h), Ok(Some("a/b".to_string())));
        let h =
            link("</gitlab/v1/repository-paths/a/repositories/list/?last=a/c&n=2>; rel=\"next\"");
        assert_eq!(next_marker(&h), Ok(Some("a/c".to_string())));
    }

    #[test]
    fn no_link_means_last_page_and_a_next_link_without_last_is_malformed() {
        assert_eq!(next_marker(&HeaderMap::new()), Ok(None));
        assert_eq!(next_marker(&link("</x?n=1>; rel=\"prev\"")), Ok(None));
        assert!(next_marker(&link("</x?n=1>; rel=\"next\"")).is_err());
    }
}
