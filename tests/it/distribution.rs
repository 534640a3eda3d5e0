//! The service's tokens against a real registry: Debian's `docker-registry` (the distribution
//! registry GitLab's container registry grew from, with the same token check), trusting a
//! certificate of the service's key. Until this, only the simulator checked the tokens.

use crate::common::distribution::Distribution;
use crate::common::{signer, FIXTURE_KEY, OTHER_KEY};

/// The answer's status and body to a `GET` of `path` on `registry`, with `bearer` if any.
async fn get(registry: &Distribution, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", registry.url()));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[actix_rt::test]
async fn a_real_registry_accepts_the_service_tokens_and_refuses_another_keys() {
    let project = "group-1/proj-1";
    let repository = "group-1/proj-1/app";
    let Some(registry) = Distribution::start(
        "a_real_registry_accepts_the_service_tokens",
        FIXTURE_KEY,
        &[project, repository],
    ) else {
        return;
    };
    let ours = signer(FIXTURE_KEY);
    let theirs = signer(OTHER_KEY);

    // No token: the registry asks for one, for the service the tokens name.
    let (status, _) = get(&registry, "/v2/", None).await;
    assert_eq!(status, 401, "{}", registry.logged());

    // The listing's token (pull on the project's path and on `path/*`), as the service signs it.
    let listing = ours.mint(project).expect("a token");
    let (status, body) = get(&registry, "/v2/", Some(&listing.bearer)).await;
    assert_eq!(status, 200, "{body}\n{}", registry.logged());
    let tags = format!("/v2/{project}/tags/list");
    let (status, body) = get(&registry, &tags, Some(&listing.bearer)).await;
    assert_eq!(status, 200, "{body}\n{}", registry.logged());
    assert!(body.contains(r#""tags":["latest"]"#), "{body}");

    // The same claims signed with another key: refused, on every route.
    let forged = theirs.mint(project).expect("a token");
    assert_eq!(get(&registry, "/v2/", Some(&forged.bearer)).await.0, 401);
    assert_eq!(get(&registry, &tags, Some(&forged.bearer)).await.0, 401);

    // The registry matches access by exact name: `path/*` grants no repository below the path,
    // which is why a repository's size is read with a token naming it exactly.
    let below = format!("/v2/{repository}/tags/list");
    assert_eq!(get(&registry, &below, Some(&listing.bearer)).await.0, 401);
    let exact = ours.mint_exact(&[repository]).expect("a token");
    let (status, body) = get(&registry, &below, Some(&exact.bearer)).await;
    assert_eq!(status, 200, "{body}\n{}", registry.logged());
    let forged = theirs.mint_exact(&[repository]).expect("a token");
    assert_eq!(get(&registry, &below, Some(&forged.bearer)).await.0, 401);

    // A full batch, as the service packs its tokens, near the size bound: accepted whole.
    let paths: Vec<String> = std::iter::once(project.to_string())
        .chain((0..400).map(|i| format!("a-rather-long-group-name/subgroup/project-{i:03}")))
        .collect();
    let as_options: Vec<Option<&str>> = paths.iter().map(|p| Some(p.as_str())).collect();
    let first = ours.batch_lengths(&as_options, usize::MAX)[0];
    let full = ours.mint_for(&paths[..first]).expect("a token");
    assert!(
        full.bearer.len() > ours.max_token_bytes() * 9 / 10,
        "a batch fills its token: {} bytes",
        full.bearer.len()
    );
    let (status, body) = get(&registry, &tags, Some(&full.bearer)).await;
    assert_eq!(status, 200, "{body}\n{}", registry.logged());
}
