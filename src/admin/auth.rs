//! Who may call the admin API when `admin.token` is set: the decision as a pure function of the
//! peer, the method and the `Authorization` header, taken by the [`super::door`] after its own
//! checks.
//!
//! The rule:
//! - `Authorization: Bearer <token>` is accepted on every call, from anywhere.
//! - `Authorization: Basic` with the token as the password (any user name) is accepted only on the
//!   read-only calls (GET: `/`, `/status`, `/damage`, `/metrics`) and only from a loopback peer.
//!   A browser cannot send a bearer token, so Basic is how the live page logs in. Not on the
//!   controls: a browser sends cached Basic credentials with every request to the origin, a
//!   cross-site form POST included, so accepting them there would let any page the operator
//!   visits pause the service (CSRF). Not from other hosts: the admin API has no TLS, and a
//!   password sent in the clear over a network is as good as published; an operator comes through
//!   an SSH tunnel or a TLS-terminating proxy on the same host, whose connections are loopback.
//!   Forwarding headers (`X-Forwarded-For`) are not read: the peer is the socket's.
//! - Secrets are compared without early exit.

use std::net::IpAddr;

use actix_web::http::Method;
use base64::Engine;

/// The `WWW-Authenticate` challenge the live page answers with where Basic would be accepted.
pub const CHALLENGE: &str = "Basic realm=\"registry-repair\"";

/// What a call brings that the decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The socket's peer; `None` when not known (treated as not loopback).
    pub peer: Option<IpAddr>,
    pub method: &'a Method,
    /// The `Authorization` header, when there is one and it is text.
    pub authorization: Option<&'a str>,
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or a scheme other than Bearer and Basic.
    Missing,
    /// A token, or a Basic password, that is not `admin.token` (or Basic that cannot be read).
    Wrong,
    /// Basic on a call that changes something.
    BasicOnControl,
    /// Basic from a peer that is not loopback.
    BasicNotOverLoopback,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing | Refusal::Wrong => {
                "missing or wrong bearer token (admin.token)"
            }
            Refusal::BasicOnControl => {
                "HTTP Basic is accepted only on the read-only GET calls; send the token as a bearer token (admin.token)"
            }
            Refusal::BasicNotOverLoopback => {
                "HTTP Basic is accepted only over loopback (an SSH tunnel or a TLS-terminating proxy on this host); send the token as a bearer token (admin.token)"
            }
        }
    }
}

/// Whether Basic may log this call in: a read-only method from a loopback peer.
pub fn basic_accepted(call: &Call<'_>) -> bool {
    let read_only = *call.method == Method::GET || *call.method == Method::HEAD;
    let loopback = call.peer.is_some_and(|ip| ip.to_canonical().is_loopback());
    read_only && loopback
}

/// Whether `call` may go ahead with `token` (`admin.token`); without a token every call may.
pub fn decide(token: Option<&str>, call: &Call<'_>) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Ok(());
    };
    let Some((scheme, credentials)) = call
        .authorization
        .and_then(|header| header.trim().split_once(' '))
    else {
        return Err(Refusal::Missing);
    };
    let credentials = credentials.trim();
    // Auth schemes are case-insensitive (RFC 9110).
    if scheme.eq_ignore_ascii_case("Bearer") {
        return same_secret(credentials.as_bytes(), token.as_bytes())
            .then_some(())
            .ok_or(Refusal::Wrong);
    }
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Err(Refusal::Missing);
    }
    let read_only = *call.method == Method::GET || *call.method == Method::HEAD;
    if !read_only {
        return Err(Refusal::BasicOnControl);
    }
    if !basic_accepted(call) {
        return Err(Refusal::BasicNotOverLoopback);
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
        return Err(Refusal::Wrong);
    };
    // `user:password`; the user name is not looked at.
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Err(Refusal::Wrong);
    };
    same_secret(&decoded[colon + 1..], token.as_bytes())
        .then_some(())
        .ok_or(Refusal::Wrong)
}

/// `given == expected`, looking at every byte whatever the first difference (only the length
/// shows in the time taken).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const TOKEN: &str = "s3cret";
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

    fn basic(user: &str, password: &str) -> String {
        let pair = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    fn decide_for(
        peer: Option<IpAddr>,
        method: Method,
        header: Option<&str>,
    ) -> Result<(), Refusal> {
        decide(
            Some(TOKEN),
            &Call {
                peer,
                method: &method,
                authorization: header,
            },
        )
    }

    #[test]
    fn without_a_token_every_call_goes_ahead() {
        let call = Call {
            peer: Some(ELSEWHERE),
            method: &Method::POST,
            authorization: None,
        };
        assert_eq!(decide(None, &call), Ok(()));
    }

    #[test]
    fn a_bearer_token_is_accepted_on_every_call_from_anywhere_and_only_when_right() {
        for method in [Method::GET, Method::POST] {
            for peer in [Some(LOOPBACK), Some(ELSEWHERE), None] {
                assert_eq!(
                    decide_for(peer, method.clone(), Some("Bearer s3cret")),
                    Ok(())
                );
                assert_eq!(
                    decide_for(peer, method.clone(), Some("bearer s3cret")),
                    Ok(())
                );
                assert_eq!(
                    decide_for(peer, method.clone(), Some("Bearer s3creT")),
                    Err(Refusal::Wrong)
                );
                assert_eq!(
                    decide_for(peer, method.clone(), Some("Bearer s3cret2")),
                    Err(Refusal::Wrong)
                );
                assert_eq!(
                    decide_for(peer, method.clone(), None),
                    Err(Refusal::Missing)
                );
                assert_eq!(
                    decide_for(peer, method.clone(), Some("Digest x")),
                    Err(Refusal::Missing)
                );
            }
        }
    }

    #[test]
    fn basic_with_the_token_as_password_logs_in_a_read_only_call_over_loopback() {
        for peer in [
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(127, 8, 9, 10)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            // An IPv4 client of a dual-stack listener.
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ] {
            for user in ["", "operator", "ops@example"] {
                assert_eq!(
                    decide_for(Some(peer), Method::GET, Some(&basic(user, TOKEN))),
                    Ok(()),
                    "{peer} {user}"
                );
            }
        }
        assert_eq!(
            decide_for(Some(LOOPBACK), Method::HEAD, Some(&basic("u", TOKEN))),
            Ok(())
        );
        // The password is everything after the first colon.
        assert_eq!(
            decide_for(Some(LOOPBACK), Method::GET, Some(&basic("u", "s3cret:"))),
            Err(Refusal::Wrong)
        );
    }

    #[test]
    fn basic_is_refused_on_controls_from_other_hosts_and_with_a_wrong_password() {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(
                decide_for(Some(LOOPBACK), method, Some(&basic("u", TOKEN))),
                Err(Refusal::BasicOnControl)
            );
        }
        for peer in [
            Some(ELSEWHERE),
            Some(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped())),
            Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
            None,
        ] {
            assert_eq!(
                decide_for(peer, Method::GET, Some(&basic("u", TOKEN))),
                Err(Refusal::BasicNotOverLoopback),
                "{peer:?}"
            );
        }
        for header in [
            basic("u", "s3creT"),
            basic("u", ""),
            basic(TOKEN, "x"),
            "Basic !!!".to_string(),
            // No colon: no password at all.
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(TOKEN)
            ),
        ] {
            assert_eq!(
                decide_for(Some(LOOPBACK), Method::GET, Some(&header)),
                Err(Refusal::Wrong),
                "{header}"
            );
        }
    }

    #[test]
    fn basic_is_offered_only_where_it_would_be_accepted() {
        let call = |peer, method| Call {
            peer: Some(peer),
            method,
            authorization: None,
        };
        assert!(basic_accepted(&call(LOOPBACK, &Method::GET)));
        assert!(!basic_accepted(&call(LOOPBACK, &Method::POST)));
        assert!(!basic_accepted(&call(ELSEWHERE, &Method::GET)));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
