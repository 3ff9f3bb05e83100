//! TLS to PostgreSQL (rustls with the ring provider; the Mozilla roots are compiled in). The
//! URL's `sslmode` and `sslrootcert` (or `PGSSLMODE`, `PGSSLROOTCERT`) say what to demand,
//! as libpq reads them: [`apply`] checks the CA file before connecting, and [`explain`] says
//! which setting to change when a connection fails on TLS or on authentication.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::WarehouseError;

/// Where the CA certificates that verify the server come from.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RootCert {
    /// No `sslrootcert`: the Mozilla roots compiled into prescore.
    Builtin,
    /// `sslrootcert=system`: the same built-in public roots, as libpq 16's `system`.
    System,
    /// A PEM file of CA certificates.
    File(String),
    /// `PGSSLROOTCERT` holding the PEM certificates themselves.
    Inline,
}

impl RootCert {
    fn describe(&self) -> String {
        match self {
            RootCert::Builtin => {
                "any public CA built into prescore (no sslrootcert is given)".into()
            }
            RootCert::System => "any public CA built into prescore (sslrootcert=system)".into(),
            RootCert::File(p) => format!("the CA in sslrootcert={p}"),
            RootCert::Inline => "the CA in PGSSLROOTCERT".into(),
        }
    }
}

/// The TLS settings a connection was opened with, kept to explain its failure.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub mode: PgSslMode,
    pub root: RootCert,
    pub host: String,
    pub user: String,
    /// Whether the URL (or PGPASSWORD) gives a password.
    pub has_password: bool,
}

/// The value of the first query parameter named one of `names`, percent-decoded.
fn query_param(url: &str, names: &[&str]) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        names.contains(&decode(k).as_str()).then(|| decode(v))
    })
}

/// `url` without its query parameters named `name`.
fn without_param(url: &str, name: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, format!("#{f}")),
        None => (query, String::new()),
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| decode(kv.split('=').next().unwrap_or_default()) != name)
        .collect();
    if kept.is_empty() {
        format!("{head}{fragment}")
    } else {
        format!("{head}?{}{fragment}", kept.join("&"))
    }
}

/// `application/x-www-form-urlencoded` decoding, as the URL parser sqlx uses does.
fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

const MODES: &str = "disable, allow, prefer, require, verify-ca or verify-full";

/// The connect options for `url` (`redacted` names it in errors), its TLS settings checked
/// and the CA file read: an unknown `sslmode` and an unreadable `sslrootcert`, or one without a
/// certificate, are refused before any connection is tried. As libpq does, `require` with
/// an explicit `sslrootcert` verifies the server's certificate against it (`verify-ca`).
pub(super) fn options(
    url: &str,
    redacted: &str,
) -> Result<(PgConnectOptions, Settings), WarehouseError> {
    let refuse = |problem: String| WarehouseError::TlsSetup {
        url: redacted.to_string(),
        problem,
    };
    let mode_given = query_param(url, &["sslmode", "ssl-mode"])
        .or_else(|| std::env::var("PGSSLMODE").ok().filter(|m| !m.is_empty()));
    if let Some(m) = &mode_given {
        if m.parse::<PgSslMode>().is_err() {
            return Err(refuse(format!(
                "sslmode={m} is not a TLS mode: use one of {MODES}"
            )));
        }
    }
    // sqlx logs a parameter it does not know with its value: sslpassword (the passphrase of
    // an encrypted sslkey, which sqlx cannot use) must never reach it.
    let sqlx_url = without_param(url, "sslpassword");
    if sqlx_url.len() != url.len() {
        tracing::warn!(
            "sslpassword is not supported (an encrypted sslkey cannot be used) and is ignored"
        );
    }
    let mut opts =
        PgConnectOptions::from_str(&sqlx_url).map_err(|source| WarehouseError::Connect {
            url: redacted.to_string(),
            source,
            hint: None,
        })?;
    let root_given = query_param(url, &["sslrootcert", "ssl-root-cert", "ssl-ca"])
        .or_else(|| std::env::var("PGSSLROOTCERT").ok())
        .filter(|r| !r.is_empty());
    let root = match root_given.as_deref() {
        None => RootCert::Builtin,
        Some("system") => RootCert::System,
        Some(pem) if pem.trim_start().starts_with("-----BEGIN") => {
            // PGSSLROOTCERT may hold the certificates themselves; sqlx takes them as they are.
            RootCert::Inline
        }
        Some(path) => RootCert::File(path.to_string()),
    };
    let mut mode = opts.get_ssl_mode();
    match &root {
        RootCert::File(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                refuse(format!(
                    "sslrootcert={path} cannot be read ({e}): it must be a PEM file with the certificate of the CA that signed the server's certificate"
                ))
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(refuse(format!(
                    "sslrootcert={path} holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line): it must be the certificate of the CA that signed the server's certificate"
                )));
            }
            opts = opts.ssl_root_cert_from_pem(pem);
        }
        RootCert::System => {
            // libpq 16: `system` trusts the public CAs and demands verify-full. No extra CA.
            if mode_given.is_some() && !matches!(mode, PgSslMode::VerifyFull) {
                return Err(refuse(format!(
                    "sslmode={} may not be used with sslrootcert=system: use sslmode=verify-full (as libpq demands)",
                    mode_name(mode)
                )));
            }
            mode = PgSslMode::VerifyFull;
            opts = opts.ssl_root_cert_from_pem(Vec::new());
        }
        _ => {}
    }
    if matches!(mode, PgSslMode::Require) && matches!(root, RootCert::File(_) | RootCert::Inline) {
        mode = PgSslMode::VerifyCa;
    }
    opts = opts.ssl_mode(mode);
    let settings = Settings {
        mode,
        root,
        host: opts.get_host().to_string(),
        user: opts.get_username().to_string(),
        has_password: redacted.contains(":***@")
            || query_param(url, &["password"]).is_some()
            || std::env::var_os("PGPASSWORD").is_some(),
    };
    Ok((opts, settings))
}

/// rustls's own error inside an I/O error of the handshake, if that is what it is.
fn rustls_error(e: &sqlx::Error) -> Option<&rustls::Error> {
    match e {
        sqlx::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// Whether `e` is a TLS handshake or certificate failure: retrying cannot fix it.
pub(super) fn is_tls_failure(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Tls(_)) || rustls_error(e).is_some()
}

/// What to change when connecting failed with `e`, for the error message; None when the
/// error says it well enough.
pub(super) fn explain(e: &sqlx::Error, s: &Settings) -> Option<String> {
    use rustls::CertificateError as C;
    let mode = mode_name(s.mode);
    let skip_verify = "or sslmode=require to encrypt without verifying the server";
    if let Some(tls) = rustls_error(e) {
        let rustls::Error::InvalidCertificate(cert) = tls else {
            return Some(format!(
                "the TLS handshake with the server failed (sslmode={mode}): the server must speak TLS 1.2 or 1.3 with a certificate key rustls verifies (RSA of 2048 bits or more, ECDSA P-256 or P-384, Ed25519); fix the server's ssl settings, or use sslmode=prefer to fall back to no TLS on a network you trust"
            ));
        };
        return Some(match cert {
            C::UnknownIssuer | C::BadSignature => format!(
                "sslmode={mode} verifies the server's TLS certificate, and it is not signed by {}: set sslrootcert to the certificate of the CA that signed the server's certificate (a managed PostgreSQL publishes its CA), {skip_verify}",
                s.root.describe()
            ),
            // sqlx 0.8.6 checks the name under verify-ca too: its verifier lets through only
            // the old NotValidForName, and rustls >= 0.23.24 reports NotValidForNameContext
            // (sqlx issue #3793, fixed after 0.8.6). Failing closed is the safe side.
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's TLS certificate does not name the host {} (sslmode={mode} checks the name{}): connect with a host name the certificate lists, {skip_verify}{}",
                s.host,
                if matches!(s.mode, PgSslMode::VerifyFull) {
                    ""
                } else {
                    ", as verify-full does, in the sqlx version prescore uses"
                },
                if matches!(s.root, RootCert::File(_) | RootCert::Inline) {
                    " and no sslrootcert"
                } else {
                    ""
                }
            ),
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => format!(
                "the server's TLS certificate is outside its validity period (sslmode={mode} verifies it): renew the server's certificate, or check this machine's clock"
            ),
            _ => format!(
                "the server's TLS certificate was refused (sslmode={mode} verifies it against {}): check the server's certificate, or use sslmode=require to encrypt without verifying it",
                s.root.describe()
            ),
        });
    }
    match e {
        sqlx::Error::Tls(msg) if msg.to_string().contains("does not support TLS") => Some(format!(
            "sslmode={mode} demands TLS and the server does not offer it: turn on ssl in the server's postgresql.conf, or use sslmode=prefer on a network you trust"
        )),
        sqlx::Error::Tls(_) => Some(format!(
            "the TLS connection could not be set up (sslmode={mode}): check sslrootcert, sslcert and sslkey"
        )),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let message = db.message();
            if code == "28000" && message.contains("no pg_hba.conf entry") {
                if message.contains("no encryption") {
                    Some(format!(
                        "the server accepts {} only over TLS and this connection has none (sslmode={mode}): use sslmode=require, or sslmode=verify-full with sslrootcert",
                        s.user
                    ))
                } else {
                    Some(format!(
                        "the server's pg_hba.conf has no line for this user, database and address (sslmode={mode}): ask its administrator"
                    ))
                }
            } else if code == "28P01" && !s.has_password {
                Some(format!(
                    "the warehouse URL gives no password for {0}: add it (postgres://{0}:PASSWORD@host/db or a password= parameter), or check ~/.pgpass",
                    s.user
                ))
            } else if code == "28P01" {
                Some(format!(
                    "check the password of {} in the warehouse URL (DATABASE_URL, DATABASE_URL_FILE or a password= parameter)",
                    s.user
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<Settings, WarehouseError> {
        options(url, &super::super::redact(url)).map(|(_, s)| s)
    }

    #[test]
    fn query_parameters_are_found_and_decoded() {
        let url = "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fa+b.crt";
        assert_eq!(
            query_param(url, &["sslrootcert"]).as_deref(),
            Some("/tmp/a b.crt")
        );
        assert_eq!(
            query_param(url, &["sslmode"]).as_deref(),
            Some("verify-full")
        );
        assert_eq!(query_param(url, &["sslkey"]), None);
        assert_eq!(query_param("postgres://u@h/db", &["sslmode"]), None);
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(
            without_param(
                "postgres://h/d?sslpassword=x&sslmode=require",
                "sslpassword"
            ),
            "postgres://h/d?sslmode=require"
        );
        assert_eq!(
            without_param("postgres://h/d?sslpassword=x", "sslpassword"),
            "postgres://h/d"
        );
        assert_eq!(
            without_param("postgres://h/d", "sslpassword"),
            "postgres://h/d"
        );
    }

    #[test]
    fn modes_and_root_certificates_are_checked_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let not_pem = dir.path().join("key.txt");
        std::fs::write(&not_pem, "hunter2\n").unwrap();
        let base = "postgres://u:pw@127.0.0.1:1/db";

        let s = settings(&format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ))
        .unwrap();
        assert_eq!(mode_name(s.mode), "verify-full");
        assert_eq!(s.root, RootCert::File(ca.display().to_string()));
        // libpq: require with a root certificate verifies the CA.
        let s = settings(&format!(
            "{base}?sslmode=require&sslrootcert={}",
            ca.display()
        ))
        .unwrap();
        assert_eq!(mode_name(s.mode), "verify-ca");
        let s = settings(&format!("{base}?sslmode=require")).unwrap();
        assert_eq!((mode_name(s.mode), s.root), ("require", RootCert::Builtin));
        let s = settings(&format!("{base}?sslrootcert=system")).unwrap();
        assert_eq!(
            (mode_name(s.mode), s.root),
            ("verify-full", RootCert::System)
        );

        let refused = |url: String, needle: &str| {
            let e = settings(&url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains(":pw@") && !e.contains("hunter2"), "{e}");
        };
        refused(
            format!("{base}?sslmode=bogus"),
            "sslmode=bogus is not a TLS mode",
        );
        refused(
            format!("{base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"),
            "sslrootcert=/nonexistent/ca.crt cannot be read",
        );
        refused(
            format!(
                "{base}?sslmode=verify-full&sslrootcert={}",
                not_pem.display()
            ),
            "holds no PEM certificate",
        );
        refused(
            format!("{base}?sslmode=require&sslrootcert=system"),
            "use sslmode=verify-full",
        );
    }
}
