//! jsonwebtoken's RS256 over aws-lc, with each key parsed once per process. Its own aws-lc
//! backend parses and checks the RSA key for every signature, which costs more than the signature
//! (0.7–2 ms a token against 0.3–0.4 ms): at a registry without latency, signing alone would hold a
//! core. jsonwebtoken lets a process install its crypto provider; this one is aws-lc's own but for
//! RS256 signing.

use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use jsonwebtoken::crypto::{aws_lc, CryptoProvider, JwtSigner};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, EncodingKey};

/// Installs the provider for the process, unless one is already in use (then signing only costs
/// more).
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory: signer,
        ..aws_lc::DEFAULT_PROVIDER.clone()
    });
    if provider.install_default().is_err() {
        tracing::debug!(
            "another JWT crypto provider was installed first; RS256 keys are parsed per signature"
        );
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if *algorithm != Algorithm::RS256 {
        return (aws_lc::DEFAULT_PROVIDER.signer_factory)(algorithm, key);
    }
    Ok(Box::new(ParsedKey(parsed(key.inner())?)))
}

/// The keys parsed so far, by their DER: one in the service, a few in the tests.
fn parsed(der: &[u8]) -> Result<Arc<RsaKeyPair>, Error> {
    static KEYS: Mutex<Vec<(Vec<u8>, Arc<RsaKeyPair>)>> = Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, key)) = keys.iter().find(|(known, _)| known == der) {
        return Ok(key.clone());
    }
    let key = Arc::new(RsaKeyPair::from_der(der).map_err(|_| {
        Error::from(ErrorKind::InvalidRsaKey(
            "the key is not a PKCS#1 RSA private key".into(),
        ))
    })?);
    keys.push((der.to_vec(), key.clone()));
    Ok(key)
}

struct ParsedKey(Arc<RsaKeyPair>);

impl jsonwebtoken::signature::Signer<Vec<u8>> for ParsedKey {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        let mut signature = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(jsonwebtoken::signature::Error::from_source)?;
        Ok(signature)
    }
}

impl JwtSigner for ParsedKey {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

#[cfg(test)]
mod tests {
    use rsa::pkcs1::DecodeRsaPrivateKey;

    use super::*;

    #[test]
    fn each_key_signs_what_only_its_public_half_verifies() {
        install();
        let keys = [
            include_str!("../../tests/fixtures/registry.key"),
            include_str!("../../tests/fixtures/other.key"),
        ];
        let mut tokens = Vec::new();
        for pem in keys {
            let private = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("a fixture key");
            let header = jsonwebtoken::Header::new(Algorithm::RS256);
            // Twice: the second signature comes from the key parsed the first time.
            for _ in 0..2 {
                let claims = serde_json::json!({"sub": "x", "exp": u32::MAX});
                tokens.push(jsonwebtoken::encode(&header, &claims, &private).expect("signed"));
            }
        }
        let verify = |token: &str, pem: &str| {
            let public = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .or_else(|_| rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(pem))
                .map(|k: rsa::RsaPrivateKey| rsa::RsaPublicKey::from(&k))
                .expect("a fixture key");
            let public =
                rsa::pkcs8::EncodePublicKey::to_public_key_pem(&public, rsa::pkcs8::LineEnding::LF)
                    .expect("its public half");
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).expect("PEM");
            let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok()
        };
        for (i, token) in tokens.iter().enumerate() {
            let own = keys[i / 2];
            let other = keys[1 - i / 2];
            assert!(verify(token, own), "token {i} verifies with its key");
            assert!(
                !verify(token, other),
                "token {i} does not verify with the other key"
            );
        }
    }
}
