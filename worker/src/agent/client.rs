//! The gRPC connection to the coordinator: endpoint, TLS, the bearer token on
//! every call, and how call failures are classified.

use super::AgentError;
use cd_proto::v1::coordinator_client::CoordinatorClient;
use std::path::Path;
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub(crate) struct BearerHeader {
    header: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for BearerHeader {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// The coordinator client every agent call goes through.
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerHeader>>;

/// Build a lazily connecting client: the channel reconnects by itself after
/// the coordinator comes back, so callers only retry the call.
pub fn connect(
    url: &str,
    token: Option<&str>,
    tls_ca: Option<&Path>,
    tls_domain: Option<&str>,
) -> Result<Client, AgentError> {
    let config = |m: String| AgentError::Config(m);
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| config(format!("--coordinator `{url}`: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    if url.starts_with("https://") {
        let ca_path = tls_ca.ok_or_else(|| {
            config(format!(
                "--coordinator `{url}` uses TLS: give the CA certificate with --tls-ca FILE"
            ))
        })?;
        let pem = std::fs::read(ca_path)
            .map_err(|e| config(format!("--tls-ca {}: {e}", ca_path.display())))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(domain) = tls_domain {
            tls = tls.domain_name(domain);
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| config(format!("TLS settings for `{url}`: {e}")))?;
    } else if tls_ca.is_some() {
        return Err(config(format!(
            "--tls-ca is given but --coordinator `{url}` is not an https:// URL"
        )));
    }
    let header = match token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<AsciiMetadataValue>()
                .map_err(|_| {
                    config("the token contains characters not allowed in a header".into())
                })?,
        ),
        None => None,
    };
    Ok(CoordinatorClient::with_interceptor(
        endpoint.connect_lazy(),
        BearerHeader { header },
    ))
}
