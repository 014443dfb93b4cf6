//! E-mail over SMTP (lettre) for the alerts: STARTTLS required unless the caller says
//! otherwise, a timeout on every step. The caller resolves secrets and writes the text.
//!
//! Must not know: routing, health, secret references, the daemon.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

/// One message to send.
#[derive(Debug, Clone)]
pub struct Mail<'a> {
    /// `host:port`.
    pub server: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    /// User name and password, resolved.
    pub credentials: Option<(String, String)>,
    /// Send in clear (`tls: none`); otherwise STARTTLS is required.
    pub plain: bool,
    /// A PEM file of CA certificates to trust besides the public roots.
    pub ca_file: Option<&'a str>,
    pub subject: String,
    pub body: String,
    pub timeout: Duration,
}

/// Sends `m`.
///
/// # Errors
/// A sentence naming what failed: an address, the CA file, TLS, or the server's answer.
pub fn send(m: &Mail<'_>) -> Result<(), String> {
    let (host, port) = m
        .server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("server {:?}: expected host:port", m.server))?;
    let from: Mailbox = m.from.parse().map_err(|e| format!("sender: {e}"))?;
    let mut b = Message::builder().from(from).subject(m.subject.clone());
    for to in m.to {
        b = b.to(to.parse().map_err(|e| format!("recipient {to}: {e}"))?);
    }
    let msg = b
        .body(m.body.clone())
        .map_err(|e| format!("message: {e}"))?;
    let tls = if m.plain {
        Tls::None
    } else {
        let mut p = TlsParameters::builder(host.to_string());
        if let Some(ca) = m.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("CA file {ca}: {e}"))?;
            p = p.add_root_certificate(
                Certificate::from_pem(&pem).map_err(|e| format!("CA file {ca}: {e}"))?,
            );
        }
        Tls::Required(p.build_rustls().map_err(|e| format!("TLS: {e}"))?)
    };
    let mut t = SmtpTransport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(m.timeout));
    if let Some((u, p)) = &m.credentials {
        t = t.credentials(Credentials::new(u.clone(), p.clone()));
    }
    t.build()
        .send(&msg)
        .map(|_| ())
        .map_err(|e| format!("SMTP server {host}:{port}: {e}"))
}
