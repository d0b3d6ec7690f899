//! Login to the dashboard through OpenID Connect, against a small issuer
//! that the test starts itself (HTTPS with the development CA, ES256 ID
//! tokens signed with ring): the authorization code flow with PKCE, the
//! groups claim mapped to an organisation, and the refusals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wijkradar_server::config::{DashboardConfig, GroupMapping, OidcConfig};
use wijkradar_tests::{ANALYST, TestServer};

use crate::dashboard::{Web, browser_of};

const CLIENT_ID: &str = "wijkradar";
const CLIENT_SECRET: &str = "geheim-van-de-test";

/// What the issuer knows about one login under way.
struct Grant {
    nonce: String,
    challenge: String,
    groups: Vec<String>,
}

struct Issuer {
    url: String,
    key: EcdsaKeyPair,
    /// Signs tokens that the JWKS does not hold (a forged token).
    other_key: EcdsaKeyPair,
    /// The groups of the next account that logs in.
    next_groups: Mutex<Vec<String>>,
    forge: Mutex<bool>,
    grants: Mutex<HashMap<String, Grant>>,
}

fn key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

type Shared = State<Arc<Issuer>>;

async fn discovery(State(i): Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "issuer": i.url,
        "authorization_endpoint": format!("{}/authorize", i.url),
        "token_endpoint": format!("{}/token", i.url),
        "jwks_uri": format!("{}/jwks", i.url),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
}

async fn jwks(State(i): Shared) -> Json<serde_json::Value> {
    let public = i.key.public_key().as_ref();
    Json(serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "k1",
        "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..65]),
    }]}))
}

/// The user is signed in at once: back to the client with a code.
async fn authorize(State(i): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256", "PKCE");
    let code = format!("code-{}", q["state"].len() + i.grants.lock().unwrap().len());
    i.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            nonce: q["nonce"].clone(),
            challenge: q["code_challenge"].clone(),
            groups: i.next_groups.lock().unwrap().clone(),
        },
    );
    Redirect::to(&format!(
        "{}?code={code}&state={}",
        q["redirect_uri"], q["state"]
    ))
    .into_response()
}

async fn token(
    State(i): Shared,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let Some(grant) = i.grants.lock().unwrap().remove(&f["code"]) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier = ring::digest::digest(&ring::digest::SHA256, f["code_verifier"].as_bytes());
    if B64.encode(verifier.as_ref()) != grant.challenge {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = B64.encode(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
    let claims = B64.encode(
        serde_json::json!({
            "iss": i.url, "sub": "medewerker-42", "aud": CLIENT_ID,
            "iat": now, "exp": now + 300, "nonce": grant.nonce, "groups": grant.groups,
        })
        .to_string(),
    );
    let signing_input = format!("{header}.{claims}");
    let signer = if *i.forge.lock().unwrap() {
        &i.other_key
    } else {
        &i.key
    };
    let signature = signer
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    let id_token = format!("{signing_input}.{}", B64.encode(signature.as_ref()));
    Json(serde_json::json!({
        "access_token": "toegang", "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
    }))
    .into_response()
}

/// Starts the issuer on HTTPS with the setup's server certificate (it names
/// localhost) and returns it.
async fn start_issuer(pki: &std::path::Path) -> Arc<Issuer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let issuer = Arc::new(Issuer {
        url: format!("https://localhost:{port}"),
        key: key(),
        other_key: key(),
        next_groups: Mutex::new(Vec::new()),
        forge: Mutex::new(false),
        grants: Mutex::new(HashMap::new()),
    });
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(issuer.clone());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    issuer
}

/// Follows the login from the dashboard to the issuer and back; returns
/// the dashboard's last answer (the callback's).
async fn log_in_through(web: &mut Web, issuer: &Web) -> crate::dashboard::Page {
    let start = web.get("/oidc/inloggen").await;
    assert_eq!(start.status, 303, "{}", start.text());
    let to_issuer = start.header("location").to_owned();
    assert!(to_issuer.starts_with("https://localhost:"), "{to_issuer}");
    let path = &to_issuer[to_issuer.find("/authorize").unwrap()..];
    let back = issuer.get(path).await;
    assert_eq!(back.status, 303);
    let callback = back.header("location").to_owned();
    let path = &callback[callback.find("/oidc/terug").unwrap()..];
    let answer = web.get(path).await;
    if let Some(set) = answer.headers.get("set-cookie") {
        web.cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_owned());
    }
    answer
}

#[tokio::test]
async fn an_analyst_logs_in_through_the_identity_provider_and_unknown_groups_are_refused() {
    // The issuer first (its URL goes into the config), on the setup's PKI:
    // a setup made only for its certificates.
    let pki_dir = tempfile::tempdir().unwrap();
    wijkradar_pki::init(pki_dir.path(), &[]).unwrap();
    let issuer = start_issuer(pki_dir.path()).await;
    let dashboard_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let issuer_url = issuer.url.clone();
    let ca = pki_dir.path().join("ca.pem");
    let server = TestServer::start_with(move |c| {
        c.dashboard = Some(DashboardConfig {
            listen: format!("127.0.0.1:{dashboard_port}").parse().unwrap(),
            local_login: None,
            session_minutes: 30,
            oidc: Some(OidcConfig {
                issuer: issuer_url,
                client_id: CLIENT_ID.into(),
                client_secret_file: secret,
                redirect_url: format!("https://localhost:{dashboard_port}/oidc/terug"),
                scopes: vec!["profile".into()],
                groups_claim: "groups".into(),
                ca: Some(ca),
                groups: vec![GroupMapping {
                    group: "wijkradar-almere".into(),
                    organisation: ANALYST.into(),
                }],
            }),
        });
    })
    .await;
    assert!(
        server.dashboard().unwrap().login_url.is_none(),
        "no one-time link"
    );
    let issuer_web = Web::to(
        issuer
            .url
            .trim_start_matches("https://localhost:")
            .parse()
            .map(|p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .unwrap(),
        &pki_dir.path().join("ca.pem"),
    );

    // The login page offers the provider.
    let mut web = browser_of(&server);
    let page = web.get("/gemeente/GM0034").await;
    assert_eq!(page.status, 401);
    assert!(page.text().contains("/oidc/inloggen"));

    // An account without a mapped group is refused, and nothing opens.
    *issuer.next_groups.lock().unwrap() = vec!["iedereen".into()];
    let refused = log_in_through(&mut web, &issuer_web).await;
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("geen groep"), "{}", refused.text());
    assert!(web.cookie.is_none());

    // A token signed with a key the provider does not publish: refused.
    *issuer.next_groups.lock().unwrap() = vec!["wijkradar-almere".into()];
    *issuer.forge.lock().unwrap() = true;
    let forged = log_in_through(&mut web, &issuer_web).await;
    assert_eq!(forged.status, 403);
    assert!(web.cookie.is_none());
    *issuer.forge.lock().unwrap() = false;

    // The analyst's group: a session, and Almere's figures.
    let ok = log_in_through(&mut web, &issuer_web).await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    let cookie = ok.header("set-cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert_eq!(web.get("/gemeente/GM0034").await.status, 200);
    assert_eq!(web.get("/gemeente/GM0050").await.status, 403);

    // A callback with a state this dashboard did not start: refused.
    let stranger = browser_of(&server);
    let replay = stranger
        .get("/oidc/terug?code=code-1&state=verzonnen")
        .await;
    assert_eq!(replay.status, 403);
    assert!(stranger.cookie.is_none());

    // Every login, refused or not, is in the audit log.
    let log = crate::dashboard::audit_log(&server);
    assert_eq!(log.matches("Dashboard.Login").count(), 4, "{log}");
    assert!(log.contains("subject=medewerker-42"));
    assert!(log.contains("no group of the account maps to an organisation"));
    assert!(
        log.contains("the ID token was refused"),
        "the forged token, by its signature"
    );
    assert!(log.contains("the login was not started here"));
}
