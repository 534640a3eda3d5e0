//! The registry client against the simulated registry, and the simulator against SPEC section 2:
//! pagination, the empty last page, 404 NAME_UNKNOWN, the trailing slash, `n` bounds, tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{signer, trusted, AUDIENCE, FIXTURE_KEY, ISSUER, OTHER_KEY};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use registry_repair::registry::client::{PageAnswer, PageStep};
use registry_repair::registry::simulator::RegistrySimulator;
use registry_repair::registry::token::{pull_access, Claims};
use registry_repair::registry::{RegistryClient, RegistryError, TokenSigner};

fn client(url: &str, page_size: u32, pem: &str) -> RegistryClient {
    RegistryClient::new(url, page_size, Duration::from_secs(5), 100, signer(pem)).expect("client")
}

fn repos(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

/// Every page of `path`, as lists of paths.
async fn walk(client: &RegistryClient, path: &str) -> Result<Vec<Vec<String>>, RegistryError> {
    let mut pages = client.pages(path);
    let mut out = Vec::new();
    loop {
        match pages.next_page().await? {
            PageStep::Page(entries) => out.push(entries.into_iter().map(|e| e.path).collect()),
            PageStep::Restarted => out.clear(),
            PageStep::Done => break,
        }
    }
    Ok(out)
}

#[actix_rt::test]
async fn pages_follow_the_last_marker_until_a_short_page() {
    let sim = RegistrySimulator::start(
        repos(&[
            "grp/app",
            "grp/app/a",
            "grp/app/b/c",
            "grp/app/d",
            "grp/app/e",
            "grp/app-x/z",
            "grp/apq",
        ]),
        trusted(),
        0,
    )
    .expect("simulator");
    let pages = walk(&client(&sim.url(), 2, FIXTURE_KEY), "grp/app")
        .await
        .expect("walk");
    assert_eq!(
        pages,
        vec![
            vec!["grp/app", "grp/app/a"],
            vec!["grp/app/b/c", "grp/app/d"],
            vec!["grp/app/e"],
        ]
    );
    assert_eq!(sim.stats().list_requests, 3);
    assert_eq!(sim.stats().unauthorized, 0);
}

#[actix_rt::test]
async fn an_exact_multiple_of_the_page_size_ends_with_an_empty_page() {
    let sim = RegistrySimulator::start(repos(&["g/p/a", "g/p/b", "g/p/c", "g/p/d"]), trusted(), 0)
        .expect("simulator");
    let pages = walk(&client(&sim.url(), 2, FIXTURE_KEY), "g/p")
        .await
        .expect("walk");
    assert_eq!(
        pages,
        vec![vec!["g/p/a", "g/p/b"], vec!["g/p/c", "g/p/d"], vec![]]
    );
    assert_eq!(sim.stats().list_requests, 3);
}

#[actix_rt::test]
async fn an_unknown_top_level_namespace_is_404_name_unknown_and_means_no_repositories() {
    let sim = RegistrySimulator::start(repos(&["known/p"]), trusted(), 0).expect("simulator");
    let c = client(&sim.url(), 10, FIXTURE_KEY);
    assert_eq!(
        walk(&c, "unknown/p").await.expect("walk"),
        Vec::<Vec<String>>::new()
    );
    let token = c.signer().mint("unknown/p").expect("token");
    assert_eq!(
        c.list_page("unknown/p", None, &token)
            .await
            .expect("answer"),
        PageAnswer::NameUnknown
    );
    // A known namespace with nothing under the path is an empty page, not a 404.
    assert_eq!(
        walk(&c, "known/other").await.expect("walk"),
        vec![Vec::<String>::new()]
    );
}

#[actix_rt::test]
async fn tokens_signed_by_another_key_or_for_another_path_are_refused_with_401() {
    let sim =
        RegistrySimulator::start(repos(&["g/p/a", "g/q/a"]), trusted(), 0).expect("simulator");
    let wrong_key = client(&sim.url(), 10, OTHER_KEY);
    match walk(&wrong_key, "g/p").await {
        Err(RegistryError::Status { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    let c = client(&sim.url(), 10, FIXTURE_KEY);
    let token_for_q = c.signer().mint("g/q").expect("token");
    match c.list_page("g/p", None, &token_for_q).await {
        Err(RegistryError::Status {
            status: 401, code, ..
        }) => {
            assert_eq!(code.as_deref(), Some("UNAUTHORIZED"))
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let wrong_issuer = RegistryClient::new(
        &sim.url(),
        10,
        Duration::from_secs(5),
        100,
        std::sync::Arc::new(
            TokenSigner::from_pem(
                FIXTURE_KEY,
                "f",
                "someone-else",
                AUDIENCE,
                Duration::from_secs(300),
            )
            .expect("key"),
        ),
    )
    .expect("client");
    assert!(matches!(
        walk(&wrong_issuer, "g/p").await,
        Err(RegistryError::Status { status: 401, .. })
    ));
    assert_eq!(sim.stats().unauthorized, 3);
}

fn hand_made_token(
    path: &str,
    iat_offset: i64,
    lifetime: i64,
    aud: &str,
    kid: Option<String>,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let iat = now + iat_offset;
    let claims = Claims {
        iss: ISSUER.into(),
        aud: aud.into(),
        sub: "test".into(),
        iat,
        nbf: iat,
        exp: iat + lifetime,
        jti: "t".into(),
        access: pull_access(path),
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid;
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(FIXTURE_KEY.as_bytes()).expect("key"),
    )
    .expect("sign")
}

async fn raw_get(url: &str, token: Option<&str>) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http");
    let mut req = http.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("request")
}

#[actix_rt::test]
async fn the_simulator_checks_expiry_audience_kid_and_its_own_url_rules() {
    let sim = RegistrySimulator::start(repos(&["g/p/a"]), trusted(), 0).expect("simulator");
    let kid = Some(trusted().kid);
    let list = format!(
        "{}/gitlab/v1/repository-paths/g/p/repositories/list/",
        sim.url()
    );

    let good = hand_made_token("g/p", 0, 300, AUDIENCE, kid.clone());
    assert_eq!(raw_get(&list, Some(&good)).await.status(), 200);
    // Expired beyond the 60 s leeway, not yet valid beyond it, wrong audience, no or wrong kid.
    let expired = hand_made_token("g/p", -400, 300, AUDIENCE, kid.clone());
    let future = hand_made_token("g/p", 120, 300, AUDIENCE, kid.clone());
    let audience = hand_made_token("g/p", 0, 300, "somebody", kid.clone());
    let no_kid = hand_made_token("g/p", 0, 300, AUDIENCE, None);
    let bad_kid = hand_made_token("g/p", 0, 300, AUDIENCE, Some("AAAA:BBBB".into()));
    for token in [&expired, &future, &audience, &no_kid, &bad_kid] {
        let r = raw_get(&list, Some(token)).await;
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    }
    assert_eq!(raw_get(&list, None).await.status(), 401);
    // Just within the leeway is still accepted.
    let recent = hand_made_token("g/p", -330, 300, AUDIENCE, kid.clone());
    assert_eq!(raw_get(&list, Some(&recent)).await.status(), 200);

    // The trailing slash is required.
    let no_slash = list.trim_end_matches('/');
    assert_eq!(raw_get(no_slash, Some(&good)).await.status(), 301);
    // n must be 1..=1000.
    for n in ["0", "1001", "x"] {
        let r = raw_get(&format!("{list}?n={n}"), Some(&good)).await;
        assert_eq!(r.status(), 400, "n={n}");
    }
    assert_eq!(
        raw_get(&format!("{list}?n=1000"), Some(&good))
            .await
            .status(),
        200
    );
    assert_eq!(
        raw_get(&format!("{}/gitlab/v1/", sim.url()), None)
            .await
            .status(),
        200
    );
}

#[actix_rt::test]
async fn a_next_marker_that_does_not_advance_and_too_many_pages_are_errors_not_loops() {
    let sim = RegistrySimulator::start(
        (0..30).map(|i| format!("g/p/r{i:02}")).collect::<Vec<_>>(),
        trusted(),
        0,
    )
    .expect("simulator");
    let c = RegistryClient::new(
        &sim.url(),
        2,
        Duration::from_secs(5),
        5,
        signer(FIXTURE_KEY),
    )
    .expect("client");
    match walk(&c, "g/p").await {
        Err(RegistryError::TooManyPages { max_pages: 5, .. }) => {}
        other => panic!("expected too many pages, got {other:?}"),
    }
    assert_eq!(sim.stats().list_requests, 5);
}

#[actix_rt::test]
async fn one_shared_token_serves_every_project_of_its_batch_and_only_those() {
    use registry_repair::registry::token::SharedToken;
    let sim = RegistrySimulator::start(repos(&["g/a/x", "g/b/y", "g/c/z"]), trusted(), 0)
        .expect("simulator");
    let c = client(&sim.url(), 10, FIXTURE_KEY);
    let shared = std::sync::Arc::new(SharedToken::new(vec!["g/a".into(), "g/b".into()]));
    let first_page_len = |path: &'static str| {
        let mut pages = c.pages_sharing(path, Some(shared.clone()));
        async move {
            pages
                .next_page()
                .await
                .expect("page")
                .into_entries()
                .map(|p| p.len())
        }
    };
    for path in ["g/a", "g/b"] {
        assert_eq!(first_page_len(path).await, Some(1));
    }
    assert_eq!(c.signer().minted(), 1, "one signature for both");
    // A path the shared token does not cover gets a token of its own.
    assert_eq!(first_page_len("g/c").await, Some(1));
    assert_eq!(c.signer().minted(), 2);
    assert_eq!(sim.stats().unauthorized, 0);
}
