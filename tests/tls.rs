//! TLS and password authentication (issue 13 item 11), against a private cluster that serves
//! TLS with a self-signed CA and accepts TCP logins only over TLS with SCRAM passwords
//! (`hostssl ... scram-sha-256`): what the shared test server, which trusts everyone, cannot
//! show. `sslmode=require` runs a real job, `verify-full` with the right CA works, and a wrong
//! CA, a host the certificate does not name, no TLS at all and a wrong password each fail at
//! once with exit 1, a message that says what to change, and never the password.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Setup, Tls};
use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";
const USER: &str = "prescore";
const PASSWORD: &str = "Tls-S3cr3t-pw";

/// A cluster serving TLS with `tls`'s server certificate, on 127.0.0.1 and 127.0.0.2, where
/// every TCP login needs TLS and a SCRAM password; the role `prescore` owns a database.
fn tls_cluster(test: &str) -> Option<(Cluster, Tls)> {
    let tls = Tls::generate(test)?;
    let pg = Cluster::start(
        test,
        Setup {
            conf: vec!["listen_addresses = '127.0.0.1,127.0.0.2'".into()],
            hba: vec!["hostssl all all 127.0.0.0/8 scram-sha-256".into()],
            tls: Some(&tls),
        },
    )?;
    pg.create_user(USER, PASSWORD);
    assert_eq!(
        pg.sql(
            "postgres",
            &format!(
                "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = '{USER}'"
            )
        ),
        "t",
        "the password is not stored as SCRAM"
    );
    Some((pg, tls))
}

/// Runs prescore and checks it failed with exit 1 within seconds (no retries, no pool
/// time-out), with every `needles` in its output and never the password.
fn fails_with(args: &[&str], envs: &[(&str, &str)], needles: &[&str]) -> Output {
    let started = Instant::now();
    let o = prescore(args, envs);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {out}");
    for n in needles {
        assert!(out.contains(n), "{args:?}: expected {n:?} in {out}");
    }
    assert!(
        !out.contains("S3cr3t"),
        "{args:?}: the password leaked: {out}"
    );
    assert!(!out.contains("panicked"), "{args:?}: {out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{args:?}: took {:?} to fail: {out}",
        started.elapsed()
    );
    o
}

/// `init` with the URL as --warehouse, and `run` of the churn job with the URL from
/// DATABASE_URL, must both fail with `needles`.
fn both_fail(db: &Db, url: &str, needles: &[&str]) {
    fails_with(&["init", "--warehouse", url], &[], needles);
    let cfg = config(db, CHURN, &[(db.url.as_str(), "${DATABASE_URL}")]);
    fails_with(
        &["-vv", "run", "--config", cfg.to_str().unwrap()],
        &[("DATABASE_URL", url)],
        needles,
    );
}

/// Whether the session `url` opens is encrypted, as the server sees it.
async fn encrypted(url: &str) -> bool {
    let db = Db::at("tls", url);
    rows(
        &db,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await[0][0]
        == "true"
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_require_and_verify_full_connect_and_a_wrong_ca_or_no_tls_exit_1() {
    let Some((pg, tls)) = tls_cluster("tls") else {
        return;
    };
    let url = |host: &str, query: &str| pg.url(host, USER, PASSWORD, USER, query);
    let ca = tls.ca_crt.display().to_string();
    let other_ca = tls.other_ca_crt.display().to_string();

    // sslmode=require: a real job end to end (seed, train, score, publish), encrypted.
    let require = url("127.0.0.1", "sslmode=require");
    let db = Db::at("postgres+tls", &require);
    seed_churn(&db, 600);
    let cfg = config(&db, CHURN, &[]);
    let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("S3cr3t"), "{}", text(&o));
    assert!(count(&db, "churn_scores").await > 0);
    assert!(
        encrypted(&require).await,
        "sslmode=require is not encrypted"
    );
    // No sslmode is libpq's `prefer`: TLS when the server offers it, as this one does.
    assert!(
        encrypted(&url("127.0.0.1", "")).await,
        "prefer did not use TLS"
    );

    // verify-full with the CA that signed the server's certificate, by address and by name.
    for host in ["127.0.0.1", "localhost"] {
        let full = url(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let checked = Db::at("postgres+verify-full", &full);
        let cfg = config(&checked, CHURN, &[]);
        let o = prescore(&["check", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{host}: {}", text(&o));
        let o = prescore(&["runs"], &[("DATABASE_URL", &full)]);
        assert!(o.status.success(), "{host}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("churn_daily"),
            "{}",
            text(&o)
        );
        assert!(encrypted(&full).await);
    }

    // A CA that did not sign the server's certificate: refused, naming the file and the mode.
    let wrong = url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={other_ca}"),
    );
    both_fail(
        &db,
        &wrong,
        &[
            "cannot connect to postgres://prescore:***@127.0.0.1",
            &format!("sslmode=verify-full verifies the server's TLS certificate, and it is not signed by the CA in sslrootcert={other_ca}"),
            "set sslrootcert to the certificate of the CA",
        ],
    );
    // As libpq does, `require` with a sslrootcert verifies the CA (verify-ca).
    both_fail(
        &db,
        &url(
            "127.0.0.1",
            &format!("sslmode=require&sslrootcert={other_ca}"),
        ),
        &["sslmode=verify-ca verifies the server's TLS certificate, and it is not signed by the CA in"],
    );
    // verify-full checks the host name too: 127.0.0.2 reaches the server, and its
    // certificate does not list it. So does verify-ca with the sqlx prescore uses (sqlx issue
    // #3793): stricter than libpq, never weaker.
    for mode in ["verify-full", "verify-ca"] {
        both_fail(
            &db,
            &url("127.0.0.2", &format!("sslmode={mode}&sslrootcert={ca}")),
            &[
                "does not name the host 127.0.0.2",
                &format!("sslmode={mode} checks the name"),
                "connect with a host name the certificate lists",
            ],
        );
    }
    let o = prescore(
        &[
            "init",
            "--warehouse",
            &url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    // require without a CA encrypts and does not verify: the address no longer matters.
    assert!(encrypted(&url("127.0.0.2", "sslmode=require")).await);
    // Without sslrootcert, verify-full trusts only the public CAs built in.
    both_fail(
        &db,
        &url("127.0.0.1", "sslmode=verify-full"),
        &["not signed by any public CA built into prescore (no sslrootcert is given)"],
    );
    // A sslrootcert that is not there, or not a certificate: refused before connecting.
    both_fail(
        &db,
        &url(
            "127.0.0.1",
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
        ),
        &["sslrootcert=/nonexistent/ca.crt cannot be read"],
    );
    let not_pem = sql_file(&db, "not-a-cert.pem", "just text\n");
    both_fail(
        &db,
        &url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={not_pem}"),
        ),
        &["holds no PEM certificate"],
    );
    both_fail(
        &db,
        &url("127.0.0.1", "sslmode=bogus"),
        &["sslmode=bogus is not a TLS mode", "verify-full"],
    );
    // sslmode=disable where pg_hba.conf accepts only TLS (hostssl).
    both_fail(
        &db,
        &url("127.0.0.1", "sslmode=disable"),
        &[
            "no pg_hba.conf entry",
            "accepts prescore only over TLS",
            "use sslmode=require",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_under_scram_exits_1_naming_the_user_never_the_password() {
    let Some((pg, tls)) = tls_cluster("scram") else {
        return;
    };
    let ca = tls.ca_crt.display().to_string();
    let db = Db::at(
        "postgres+scram",
        &pg.url("127.0.0.1", USER, PASSWORD, USER, ""),
    );
    let o = prescore(&["init", "--warehouse", &db.url], &[]);
    assert!(o.status.success(), "the right password: {}", text(&o));
    let wrong = "Wrong-S3cr3t";
    let host = format!("127.0.0.1:{}", pg.port);
    for url in [
        pg.url("127.0.0.1", USER, wrong, USER, "sslmode=require"),
        pg.url(
            "127.0.0.1",
            USER,
            wrong,
            USER,
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        format!("postgres://{USER}@{host}/{USER}?password={wrong}&sslmode=require"),
        // sqlx logs parameters it does not know with their value: never this one.
        pg.url(
            "127.0.0.1",
            USER,
            wrong,
            USER,
            "sslmode=require&sslpassword=Key-S3cr3t",
        ),
    ] {
        both_fail(
            &db,
            &url,
            &[
                "password authentication failed for user \"prescore\"",
                "check the password of prescore",
            ],
        );
    }
    // No password at all: the server asks for one, and the error says none was given.
    fails_with(
        &[
            "init",
            "--warehouse",
            &format!("postgres://{USER}@{host}/{USER}?sslmode=require"),
        ],
        &[],
        &[
            "password authentication failed for user \"prescore\"",
            "the warehouse URL gives no password for prescore",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_tls_handshake_exits_1_under_require_and_falls_back_to_no_tls_under_prefer() {
    // The server's key is on P-521, which rustls (ring) cannot verify: no TLS handshake can
    // succeed. pg_hba.conf accepts connections with or without TLS.
    let Some(tls) = Tls::generate_with("handshake", "secp521r1") else {
        return;
    };
    let Some(pg) = Cluster::start(
        "handshake",
        Setup {
            hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
            tls: Some(&tls),
            ..Setup::default()
        },
    ) else {
        return;
    };
    pg.create_user(USER, PASSWORD);
    let url = |query: &str| pg.url("127.0.0.1", USER, PASSWORD, USER, query);
    let db = Db::at("postgres+handshake", &url(""));
    both_fail(
        &db,
        &url("sslmode=require"),
        &[
            "the TLS handshake with the server failed (sslmode=require)",
            "TLS 1.2 or 1.3",
            "sslmode=prefer",
        ],
    );
    // prefer (the default), as libpq: the handshake fails, so connect without TLS, and say so.
    for query in ["", "sslmode=prefer"] {
        let o = prescore(&["init", "--warehouse", &url(query)], &[]);
        assert!(o.status.success(), "{query:?}: {}", text(&o));
        assert!(
            text(&o).contains("connecting without TLS"),
            "{query:?}: {}",
            text(&o)
        );
        assert!(!text(&o).contains("S3cr3t"), "{}", text(&o));
        assert!(!encrypted(&url(query)).await, "{query:?}");
    }
}
