//! The client the `status`, `concurrency`, `pause` and `resume` commands use to reach a running
//! service's admin API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{AdminError, ConcurrencyRequest, ErrorBody};
use crate::config::Secret;
use crate::scheduler::ServiceStatus;

/// Talks to a running service's admin API.
pub struct AdminClient {
    base: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl AdminClient {
    /// `listen` is the service's `admin.listen`; a wildcard address is reached on loopback.
    pub fn new(listen: SocketAddr, token: Option<Secret>) -> Self {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            base: format!("http://{}", SocketAddr::new(ip, listen.port())),
            token,
            http,
        }
    }

    pub async fn status(&self) -> Result<ServiceStatus, AdminError> {
        self.call(self.http.get(format!("{}/status", self.base)))
            .await
    }

    pub async fn set_concurrency(&self, max_concurrency: i64) -> Result<ServiceStatus, AdminError> {
        let request = self
            .http
            .post(format!("{}/concurrency", self.base))
            .json(&ConcurrencyRequest { max_concurrency });
        self.call(request).await
    }

    pub async fn set_enabled(&self, enabled: bool) -> Result<ServiceStatus, AdminError> {
        let verb = if enabled { "resume" } else { "pause" };
        // Every control call is JSON, an empty object where there is nothing to say: the service
        // refuses anything else (a browser could send it cross-site).
        let request = self
            .http
            .post(format!("{}/{verb}", self.base))
            .json(&serde_json::json!({}));
        self.call(request).await
    }

    async fn call(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<ServiceStatus, AdminError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let url = self.base.clone();
        let response = request.send().await.map_err(|e| AdminError::NotRunning {
            url: url.clone(),
            message: crate::errors::chain(&e),
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| AdminError::Malformed {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(AdminError::Refused {
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| AdminError::Malformed {
            url,
            message: e.to_string(),
        })
    }
}
