//! Registry tokens as GitLab mints them: RS256 JWTs signed with `registry.key`, whose `kid` is the
//! libtrust key id of the public key, granting `pull` on a project path and everything under it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Settings};

/// The longest token this service sends at first. nginx, which the Linux package puts in front of
/// the registry, refuses a request header line longer than one of its `large_client_header_buffers`
/// (8 KiB by default) with 400; Apache's `LimitRequestFieldSize` is 8,190 bytes. 6 KiB leaves
/// 2 KiB to spare on such a line. A proxy configured tighter is learnt: see
/// [`TokenSigner::refused`].
pub const MAX_TOKEN_BYTES: usize = 6144;
/// The bound never shrinks below this: a token for one project is at most about 1.2 KiB (a
/// 255-byte path with a 2048-bit key), and such a token is always sent alone anyway.
const MIN_TOKEN_BYTES: usize = 1024;

/// GitLab back-dates `nbf` so that a registry whose clock is slightly behind still accepts it.
const NOT_BEFORE_SLACK_S: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading registry key {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("registry key {path} is not a PEM RSA private key (PKCS#1 or PKCS#8)")]
    NotRsa { path: String },
    #[error("encoding the registry public key: {0}")]
    PublicKey(String),
    #[error("signing a registry token for {path}: {message}")]
    Sign { path: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub access: Vec<Access>,
}

/// The access a List Sub Repositories call on `path` needs.
pub fn pull_access(path: &str) -> Vec<Access> {
    let pull = |name: String| Access {
        kind: "repository".into(),
        name,
        actions: vec!["pull".into()],
    };
    vec![pull(path.to_string()), pull(format!("{path}/*"))]
}

/// The access a repository's details (its size) need: `pull` on that name exactly. The
/// registry matches access records by exact name (`path/*` is a literal name, no wildcard), so
/// the listing's records do not grant it.
pub fn exact_pull_access(repository: &str) -> Access {
    Access {
        kind: "repository".into(),
        name: repository.to_string(),
        actions: vec!["pull".into()],
    }
}

/// Bytes the two access entries of `path` add to a token's claims (a comma each included).
fn access_json_len(path: &str) -> usize {
    serde_json::to_vec(&pull_access(path)).map_or(usize::MAX / 2, |json| json.len())
}

/// Bytes the exact access entry of `repository` adds to a token's claims (a comma included).
fn exact_access_json_len(repository: &str) -> usize {
    serde_json::to_vec(&exact_pull_access(repository)).map_or(usize::MAX / 2, |json| json.len() + 1)
}

/// The lengths of consecutive runs of items, each at most `max_items` long and costing at most
/// `budget` in all; an item over the budget alone makes a run of its own.
fn split_within(costs: impl Iterator<Item = usize>, max_items: usize, budget: usize) -> Vec<usize> {
    let mut lengths = Vec::new();
    let (mut len, mut used) = (0usize, 0usize);
    for cost in costs {
        if len > 0 && (len >= max_items || used + cost > budget) {
            lengths.push(len);
            (len, used) = (0, 0);
        }
        len += 1;
        used += cost;
    }
    if len > 0 {
        lengths.push(len);
    }
    lengths
}

fn base64_len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

/// A signed token and the moment it stops being valid.
#[derive(Clone)]
pub struct Token {
    pub bearer: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for Token {
    // Never let a token reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub struct TokenSigner {
    key: EncodingKey,
    /// `{"typ":"JWT","alg":"RS256","kid":...}`, the same for every token.
    header: Header,
    /// The header's length in the token (base64url), for the size bound.
    header_len: usize,
    /// The signature's length in the token (base64url of the modulus' bytes).
    signature_len: usize,
    kid: String,
    public_key_pem: String,
    issuer: String,
    audience: String,
    lifetime: Duration,
    serial: AtomicU64,
    /// The longest token batches are made for now: `MAX_TOKEN_BYTES`, less after a proxy refused
    /// a shared token.
    max_bytes: std::sync::atomic::AtomicUsize,
}

impl TokenSigner {
    /// The signer `registry.key_path`, `registry.issuer`, `registry.audience` and
    /// `registry.token_lifetime_s` describe; a key that cannot be read or is no RSA key is a
    /// configuration error naming `registry.key_path`.
    pub fn from_settings(settings: &Settings) -> Result<Arc<Self>, ConfigError> {
        Self::from_pem_file(
            settings.key_path()?,
            &settings.registry.issuer,
            &settings.registry.audience,
            settings.registry.token_lifetime,
        )
        .map(Arc::new)
        .map_err(|e| ConfigError::new("registry.key_path", e.to_string()))
    }

    pub fn from_pem_file(
        path: &Path,
        issuer: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<Self, TokenError> {
        let pem = std::fs::read_to_string(path).map_err(|error| TokenError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_pem(
            &pem,
            &path.display().to_string(),
            issuer,
            audience,
            lifetime,
        )
    }

    /// `origin` names where the PEM came from, for error messages.
    pub fn from_pem(
        pem: &str,
        origin: &str,
        issuer: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<Self, TokenError> {
        super::rs256::install();
        let private = RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|_| TokenError::NotRsa {
                path: origin.to_string(),
            })?;
        let public = RsaPublicKey::from(&private);
        let spki = public
            .to_public_key_der()
            .map_err(|e| TokenError::PublicKey(e.to_string()))?;
        let public_key_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TokenError::PublicKey(e.to_string()))?;
        let pkcs1 = private
            .to_pkcs1_der()
            .map_err(|e| TokenError::PublicKey(e.to_string()))?;
        let kid = libtrust_key_id(spki.as_bytes());
        let header = Header {
            kid: Some(kid.clone()),
            ..Header::new(Algorithm::RS256)
        };
        let header_json =
            serde_json::to_vec(&header).map_err(|e| TokenError::PublicKey(e.to_string()))?;
        Ok(Self {
            key: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            header_len: base64_len(header_json.len()),
            signature_len: base64_len(public.size()),
            header,
            kid,
            public_key_pem,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            lifetime,
            serial: AtomicU64::new(0),
            max_bytes: std::sync::atomic::AtomicUsize::new(MAX_TOKEN_BYTES),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The longest token batches are made for now.
    pub fn max_token_bytes(&self) -> usize {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// A request with a shared token of `bytes` was refused with 400 or 431, as a proxy refuses
    /// a header line over its limit: from now on batches make tokens of at most half that, so
    /// that one refusal, not one per batch, teaches the service the proxy's limit. Returns the
    /// new bound when it shrank.
    pub fn refused(&self, bytes: usize) -> Option<usize> {
        let wanted = (bytes / 2).max(MIN_TOKEN_BYTES);
        let before = self.max_bytes.fetch_min(wanted, Ordering::Relaxed);
        (wanted < before).then_some(wanted)
    }

    /// Splits `paths` (in order; `None` for a project that needs no token) into consecutive
    /// batches of at most `max_paths`, each of whose tokens stays within
    /// [`max_token_bytes`](Self::max_token_bytes).
    /// Returns the batch lengths. A path too long to share a token gets one of its own.
    pub fn batch_lengths(&self, paths: &[Option<&str>], max_paths: usize) -> Vec<usize> {
        let costs = paths.iter().map(|path| path.map_or(0, access_json_len));
        split_within(costs, max_paths, self.claims_budget())
    }

    /// Splits `repositories` into consecutive groups, each of whose tokens naming every one of
    /// them exactly stays within [`max_token_bytes`](Self::max_token_bytes). Returns the group
    /// lengths. A name too long to share a token gets one of its own.
    pub fn exact_batch_lengths<S: AsRef<str>>(&self, repositories: &[S]) -> Vec<usize> {
        let costs = repositories
            .iter()
            .map(|repository| exact_access_json_len(repository.as_ref()));
        split_within(costs, usize::MAX, self.claims_budget())
    }

    /// How many bytes of `access` entries a token's claims may hold within the bound:
    /// the token is `header.claims.signature`, each part base64url without padding.
    fn claims_budget(&self) -> usize {
        let claims = self
            .max_token_bytes()
            .saturating_sub(self.header_len + 2 + self.signature_len)
            * 3
            / 4;
        // Everything but the access entries, with the widest values they can take.
        let fixed = serde_json::to_vec(&Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: "registry-repair".into(),
            iat: i64::MAX,
            nbf: i64::MAX,
            exp: i64::MAX,
            jti: "f".repeat(4 * 16 + 3),
            access: Vec::new(),
        })
        .map_or(claims, |json| json.len());
        claims.saturating_sub(fixed)
    }

    /// Signs a token that lets its bearer list `path` and everything below it.
    pub fn mint(&self, path: &str) -> Result<Token, TokenError> {
        self.mint_for(&[path])
    }

    /// How many tokens this signer has signed.
    pub fn minted(&self) -> u64 {
        self.serial.load(Ordering::Relaxed)
    }

    /// Signs one token that lets its bearer list each of `paths` and everything below them.
    pub fn mint_for<S: AsRef<str>>(&self, paths: &[S]) -> Result<Token, TokenError> {
        self.mint_access(
            paths.iter().flat_map(|p| pull_access(p.as_ref())).collect(),
            || join(paths),
        )
    }

    /// Signs one token that lets its bearer read the details of each of `repositories`, and
    /// nothing else.
    pub fn mint_exact<S: AsRef<str>>(&self, repositories: &[S]) -> Result<Token, TokenError> {
        self.mint_access(
            repositories
                .iter()
                .map(|r| exact_pull_access(r.as_ref()))
                .collect(),
            || join(repositories),
        )
    }

    /// Signs one token granting `access`; `described` names what it is for, in an error.
    fn mint_access(
        &self,
        access: Vec<Access>,
        described: impl Fn() -> String,
    ) -> Result<Token, TokenError> {
        let now = SystemTime::now();
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let lifetime = self.lifetime.as_secs() as i64;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: "registry-repair".into(),
            iat,
            nbf: iat - NOT_BEFORE_SLACK_S,
            exp: iat + lifetime,
            jti: format!(
                "{:x}-{:x}-{serial:x}-{:x}",
                std::process::id(),
                iat,
                rand::random::<u64>()
            ),
            access,
        };
        let bearer = jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| {
            TokenError::Sign {
                path: described(),
                message: e.to_string(),
            }
        })?;
        Ok(Token {
            bearer,
            expires_at: now + self.lifetime,
        })
    }
}

/// One token for the projects of one dispatch batch, signed when the first of them needs it.
///
/// RSA signing is the costliest step of analysing a project without repositories (about 0.7 ms of
/// CPU); one signature for a batch of projects keeps the registry, not signing, the limit. The
/// token grants pull on exactly those projects' paths, and goes only to `registry.url`.
pub struct SharedToken {
    paths: Vec<String>,
    /// An async lock: the batch's other projects wait for the one signature under way.
    token: tokio::sync::Mutex<Option<Token>>,
    /// Signing ahead has been asked for once already.
    warming: std::sync::atomic::AtomicBool,
    /// A request with it was refused as too long: the batch's other projects go alone.
    refused: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SharedToken {
    // The paths only: the token itself never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedToken")
            .field("paths", &self.paths.len())
            .finish_non_exhaustive()
    }
}

impl SharedToken {
    pub fn new(paths: Vec<String>) -> Self {
        Self {
            paths,
            token: tokio::sync::Mutex::new(None),
            warming: std::sync::atomic::AtomicBool::new(false),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True the first time only: whoever gets true signs ahead of need.
    pub fn start_warming(&self) -> bool {
        !self.warming.swap(true, Ordering::Relaxed)
    }

    /// A proxy refused a request with this token (400/431): the batch's other projects sign
    /// tokens of their own.
    pub fn mark_refused(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    pub fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many project paths the token grants.
    pub fn paths(&self) -> usize {
        self.paths.len()
    }

    pub fn covers(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// The shared token while `fresh` holds for it; otherwise a newly signed one.
    pub async fn get(
        &self,
        signer: &Arc<TokenSigner>,
        fresh: impl Fn(&Token) -> bool,
    ) -> Result<Token, TokenError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| fresh(t)) {
            return Ok(token.clone());
        }
        let token = sign(signer, self.paths.clone()).await?;
        *slot = Some(token.clone());
        Ok(token)
    }
}

fn join<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| n.as_ref())
        .collect::<Vec<_>>()
        .join(", ")
}

/// As [`sign`], a token naming each of `repositories` exactly (their details, their sizes).
pub async fn sign_exact(
    signer: &Arc<TokenSigner>,
    repositories: Vec<String>,
) -> Result<Token, TokenError> {
    let signer = signer.clone();
    let what = repositories.join(", ");
    tokio::task::spawn_blocking(move || signer.mint_exact(&repositories))
        .await
        .unwrap_or_else(|e| {
            Err(TokenError::Sign {
                path: what,
                message: format!("the signing task ended: {e}"),
            })
        })
}

/// Signs on the blocking pool: an RSA signature takes a millisecond or two of CPU, which would
/// otherwise stall every request the service has in flight.
pub async fn sign(signer: &Arc<TokenSigner>, paths: Vec<String>) -> Result<Token, TokenError> {
    let signer = signer.clone();
    let what = paths.join(", ");
    tokio::task::spawn_blocking(move || signer.mint_for(&paths))
        .await
        .unwrap_or_else(|e| {
            Err(TokenError::Sign {
                path: what,
                message: format!("the signing task ended: {e}"),
            })
        })
}

/// libtrust's key id: SHA-256 of the DER public key, first 30 bytes, base32 without padding,
/// in groups of four joined by `:` (what GitLab puts in `kid`).
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let encoded = base32_no_pad(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

fn base32_no_pad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_no_pad(b""), "");
        assert_eq!(base32_no_pad(b"f"), "MY");
        assert_eq!(base32_no_pad(b"fo"), "MZXQ");
        assert_eq!(base32_no_pad(b"foo"), "MZXW6");
        assert_eq!(base32_no_pad(b"foob"), "MZXW6YQ");
        assert_eq!(base32_no_pad(b"fooba"), "MZXW6YTB");
        assert_eq!(base32_no_pad(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn kid_matches_the_one_openssl_and_python_compute_for_the_fixture_key() {
        // Computed independently: openssl rsa -pubout -outform DER | sha256 | first 30 bytes | base32.
        let pem = include_str!("../../tests/fixtures/registry.key");
        let signer = TokenSigner::from_pem(pem, "fixture", "iss", "aud", Duration::from_secs(300))
            .expect("fixture key parses");
        assert_eq!(
            signer.kid(),
            "TSQI:P3ZI:J5WT:SIO6:2GK4:OQCC:VANV:GZ7P:UASF:DFMJ:7A2P:CLFW"
        );
    }

    #[test]
    fn pkcs8_keys_are_accepted_and_garbage_is_refused() {
        let pem = include_str!("../../tests/fixtures/other.key");
        assert!(TokenSigner::from_pem(pem, "other", "i", "a", Duration::from_secs(300)).is_ok());
        let err = TokenSigner::from_pem("hello", "junk.pem", "i", "a", Duration::from_secs(300))
            .err()
            .expect("garbage refused");
        assert!(err.to_string().contains("junk.pem"), "{err}");
    }

    /// Signs the token of each batch of `paths` and checks its length.
    fn assert_tokens_within(
        signer: &TokenSigner,
        paths: &[Option<&str>],
        lengths: &[usize],
        bound: usize,
    ) {
        let mut start = 0;
        for &len in lengths {
            let batch: Vec<&str> = paths[start..start + len]
                .iter()
                .flatten()
                .copied()
                .collect();
            let token = signer.mint_for(&batch).expect("token");
            assert!(
                token.bearer.len() <= bound,
                "{} bytes for {} paths",
                token.bearer.len(),
                batch.len()
            );
            start += len;
        }
    }

    #[test]
    fn tokens_naming_repositories_exactly_stay_within_the_bound_and_name_nothing_else() {
        let pem = include_str!("../../tests/fixtures/registry.key");
        let signer = TokenSigner::from_pem(pem, "fixture", "iss", "aud", Duration::from_secs(300))
            .expect("fixture key parses");
        // A project with 1,000 missing repositories of long names.
        let repositories: Vec<String> = (0..1000)
            .map(|i| format!("{}/image-{i:04}", "deep-group-name/".repeat(6)))
            .collect();
        let lengths = signer.exact_batch_lengths(&repositories);
        assert_eq!(lengths.iter().sum::<usize>(), repositories.len());
        assert!(lengths.len() > 10, "{lengths:?}");
        let mut rest = repositories.as_slice();
        for len in lengths {
            let (group, after) = rest.split_at(len);
            rest = after;
            let token = signer.mint_exact(group).expect("token");
            assert!(
                token.bearer.len() <= MAX_TOKEN_BYTES,
                "{}",
                token.bearer.len()
            );
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(signer.public_key_pem().as_bytes())
                .expect("the public key");
            let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
            validation.set_audience(&["aud"]);
            validation.set_issuer(&["iss"]);
            let claims = jsonwebtoken::decode::<Claims>(&token.bearer, &key, &validation)
                .expect("a token signed with the key, for its issuer and audience")
                .claims;
            let names: Vec<&str> = claims.access.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(names, group.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    #[test]
    fn token_batches_stay_within_the_size_bound_and_short_paths_fill_a_batch() {
        let pem = include_str!("../../tests/fixtures/registry.key");
        let signer = TokenSigner::from_pem(pem, "fixture", "iss", "aud", Duration::from_secs(300))
            .expect("fixture key parses");
        let short: Vec<String> = (0..40)
            .map(|i| format!("gitlab-org/build/images/project-{i:04}"))
            .collect();
        let short: Vec<Option<&str>> = short.iter().map(|p| Some(p.as_str())).collect();
        assert_eq!(signer.batch_lengths(&short, 16), vec![16, 16, 8]);

        // 194-character paths in nested groups, as an operator tried behind nginx.
        let long: Vec<String> = (0..48)
            .map(|i| {
                format!(
                    "{}/p-{i:03}",
                    "deep-group-name/".repeat(12).trim_end_matches('/')
                )
            })
            .collect();
        let mut with_gaps: Vec<Option<&str>> = long.iter().map(|p| Some(p.as_str())).collect();
        with_gaps.insert(5, None);
        let lengths = signer.batch_lengths(&with_gaps, 16);
        let lengths_before = lengths.len();
        assert_eq!(lengths.iter().sum::<usize>(), with_gaps.len());
        assert!(
            lengths.len() > 3,
            "long paths make smaller batches: {lengths:?}"
        );
        assert_tokens_within(&signer, &with_gaps, &lengths, MAX_TOKEN_BYTES);
        // A proxy refused a shared token: batches shrink to half its size, never below one path.
        assert_eq!(signer.refused(6000), Some(3000));
        assert_eq!(signer.refused(7000), None, "only ever down");
        assert_eq!(signer.max_token_bytes(), 3000);
        let smaller = signer.batch_lengths(&with_gaps, 16);
        assert!(smaller.len() > lengths_before, "{smaller:?}");
        assert_tokens_within(&signer, &with_gaps, &smaller, 3000);
        assert_eq!(signer.refused(100), Some(MIN_TOKEN_BYTES));

        // A path too long to share gets a batch of its own, however long its token.
        let huge = "x".repeat(3000);
        assert_eq!(
            signer.batch_lengths(&[Some("a"), Some(huge.as_str()), Some("b")], 16),
            vec![1, 1, 1]
        );
    }

    #[test]
    fn token_debug_never_shows_the_bearer() {
        let token = Token {
            bearer: "secret.jwt.value".into(),
            expires_at: SystemTime::now(),
        };
        assert!(!format!("{token:?}").contains("secret"));
    }
}
