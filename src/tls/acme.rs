//! `tls_mode = acme`: obtain and renew the certificate from an ACME CA (Let's Encrypt
//! by default) with HTTP-01 challenges answered by our own plain listener.
//!
//! One background task owns it all: it loads nothing itself (the stored certificate is
//! installed before the server starts, see `tls::prepare`), sleeps until the schedule
//! says an order is due (`schedule.rs`), orders, publishes the challenge answers to the
//! lock-free map the proxy reads, stores the result in redb and swaps it into the
//! resolver. Failures are logged with what to check and retried with backoff; the
//! previous certificate stays in service meanwhile.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use time::OffsetDateTime;

use super::cert::{self, LoadedCert};
use super::live::{CertResolver, Challenges};
use super::schedule::{self, Failure, Validity};
use crate::model::{AcmeAccount, AuditEntry, StoredCertificate};
use crate::store::{Store, StoreError};

/// A whole order (account, challenges, issuance) gets this long before it counts as
/// failed; the HTTP client has no timeout of its own.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// Polling an order while the CA validates or issues.
fn polling() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(120))
}

/// What the ACME task needs from the config.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    pub ca_file: Option<PathBuf>,
}

impl AcmeSettings {
    pub fn certificate_name(&self) -> String {
        StoredCertificate::name_for(&self.directory, &self.domains)
    }
}

/// The stored certificate for these settings, if there is one that can still be
/// served (parsed, key matching, not expired). Read once, before the server starts.
pub fn stored_certificate(
    store: &Store,
    settings: &AcmeSettings,
    now: OffsetDateTime,
) -> Result<Option<LoadedCert>, StoreError> {
    let Some(stored) = store.get_certificate(&settings.certificate_name())? else {
        return Ok(None);
    };
    match cert::load_pem(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes()) {
        Ok(c) if c.validity.not_after > now => Ok(Some(c)),
        Ok(c) => {
            tracing::warn!(
                domains = ?settings.domains,
                "the stored certificate {}; ordering a new one",
                cert::describe_expiry(&c.validity, now)
            );
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(domains = ?settings.domains, "the stored certificate is unusable ({e}); ordering a new one");
            Ok(None)
        }
    }
}

/// Why an attempt failed: the step, the CA's or the network's words, and a hint.
#[derive(Debug)]
struct Failed {
    step: &'static str,
    detail: String,
    hint: Hint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    /// The CA could not reach us or did not get the right answer.
    Reachability,
    /// We could not reach the CA.
    Outbound,
    RateLimited,
    /// The CA no longer knows our account: a new one is made on the next try.
    AccountGone,
    None,
}

impl Failed {
    fn new(step: &'static str, detail: impl Into<String>, hint: Hint) -> Self {
        Failed {
            step,
            detail: detail.into(),
            hint,
        }
    }

    /// Classifies an ACME client error by the problem type the CA sent, if any.
    fn acme(step: &'static str, e: instant_acme::Error) -> Self {
        let hint = match &e {
            instant_acme::Error::Api(p) => hint_for(p.r#type.as_deref()),
            instant_acme::Error::Http(_) | instant_acme::Error::Other(_) => Hint::Outbound,
            _ => Hint::None,
        };
        Failed::new(step, e.to_string(), hint)
    }
}

fn hint_for(problem_type: Option<&str>) -> Hint {
    let kind = problem_type
        .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
        .unwrap_or("");
    match kind {
        "connection" | "dns" | "unauthorized" | "incorrectResponse" | "tls" | "caa" => {
            Hint::Reachability
        }
        "rateLimited" => Hint::RateLimited,
        "accountDoesNotExist" => Hint::AccountGone,
        _ => Hint::None,
    }
}

/// The operator-facing advice for a failure.
fn advice(hint: Hint, settings: &AcmeSettings) -> String {
    let names = settings.domains.join(", ");
    match hint {
        Hint::Reachability => format!(
            "check that {names} {} to this server and that port 80 reaches its `listen` address (HTTP-01 validation comes in over plain HTTP)",
            if settings.domains.len() == 1 { "resolves" } else { "resolve" }
        ),
        Hint::Outbound => format!(
            "check that this server can reach {} over HTTPS{}",
            settings.directory,
            if settings.ca_file.is_some() {
                " and that acme_ca_file holds the root that server's certificate chains to"
            } else {
                " (acme_ca_file adds a root for a private ACME server)"
            }
        ),
        Hint::RateLimited => "the CA's rate limit was reached; it lifts by itself (try acme_directory = \"staging\" while setting up)".to_string(),
        Hint::AccountGone => "the CA no longer knows the stored account; a new one is registered on the next try".to_string(),
        Hint::None => "see the detail above".to_string(),
    }
}

/// Withdraws published challenge answers when the attempt ends, however it ends.
struct Published<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
}

impl<'a> Published<'a> {
    fn new(challenges: &'a Challenges) -> Self {
        Published {
            challenges,
            tokens: Vec::new(),
        }
    }

    fn add(&mut self, token: &str, key_authorization: &str) {
        self.challenges.publish(token, key_authorization);
        self.tokens.push(token.to_string());
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.challenges.withdraw(t);
        }
    }
}

/// HTTPS client for the CA: Mozilla's roots (compiled in, so a minimal container
/// without a CA bundle works) plus the roots in `acme_ca_file`.
pub fn http_client(ca_file: Option<&std::path::Path>) -> Result<Box<dyn HttpClient>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = super::mozilla_roots();
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("acme_ca_file {}: cannot read: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "acme_ca_file {}: holds no PEM certificate",
                path.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("acme_ca_file {}: {e}", path.display()))?;
        }
    }
    let tls = super::client_config(roots)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    Ok(Box::new(client))
}

async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("store task failed: {e}")),
    }
}

/// The background service that keeps the certificate valid.
pub struct AcmeManager {
    settings: AcmeSettings,
    store: Store,
    resolver: Arc<CertResolver>,
    challenges: Challenges,
    /// Validity of the certificate installed at start, if any.
    initial: Option<Validity>,
    /// Failed orders are reported here (`tls.renewal_failed`).
    alerts: crate::alerts::Alerts,
}

impl AcmeManager {
    pub fn new(
        settings: AcmeSettings,
        store: Store,
        resolver: Arc<CertResolver>,
        challenges: Challenges,
        initial: Option<Validity>,
    ) -> Self {
        AcmeManager {
            settings,
            store,
            resolver,
            challenges,
            initial,
            alerts: Default::default(),
        }
    }

    /// Report failed orders to `alerts` (by default they are only logged).
    pub fn set_alerts(&mut self, alerts: crate::alerts::Alerts) {
        self.alerts = alerts;
    }

    /// The stored account, or a new one registered (and stored) now.
    async fn account(&self) -> Result<Account, Failed> {
        let http = http_client(self.settings.ca_file.as_deref())
            .map_err(|e| Failed::new("set up the HTTPS client", e, Hint::None))?;
        let directory = self.settings.directory.clone();
        let stored = blocking(&self.store, move |s| s.get_acme_account(&directory))
            .await
            .map_err(|e| Failed::new("read the stored ACME account", e, Hint::None))?;
        let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        if let Some(stored) = stored {
            let creds: AccountCredentials =
                serde_json::from_str(&stored.credentials).map_err(|e| {
                    Failed::new("read the stored ACME account", e.to_string(), Hint::None)
                })?;
            let account = Account::builder_with_http(http)
                .from_credentials(creds)
                .await
                .map_err(|e| Failed::acme("contact the ACME server", e))?;
            if stored.contact != contact {
                self.update_contact(&account, stored, contact.clone()).await;
            }
            return Ok(account);
        }
        // Registering means agreeing to the CA's terms (Let's Encrypt's subscriber
        // agreement); choosing tls_mode = acme is that choice.
        let (account, creds) = Account::builder_with_http(http)
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                None,
            )
            .await
            .map_err(|e| Failed::acme("register an ACME account", e))?;
        let record = AcmeAccount {
            directory: self.settings.directory.clone(),
            credentials: serde_json::to_string(&creds)
                .map_err(|e| Failed::new("store the ACME account", e.to_string(), Hint::None))?,
            contact: contact.clone(),
            created_at: OffsetDateTime::now_utc(),
        };
        let audit = AuditEntry::new(
            None,
            "tls.acme_account.create",
            Some(self.settings.directory.clone()),
        );
        blocking(&self.store, move |s| s.put_acme_account(&record, &audit))
            .await
            .map_err(|e| Failed::new("store the ACME account", e, Hint::None))?;
        tracing::info!(
            directory = %self.settings.directory,
            account = %account.id(),
            contact = contact.as_deref().unwrap_or("-"),
            "ACME account registered"
        );
        Ok(account)
    }

    /// `acme_email` changed since the account was registered: tell the CA. A failure
    /// only means expiry mail goes to the old address, so it is logged, not fatal.
    async fn update_contact(
        &self,
        account: &Account,
        mut stored: AcmeAccount,
        contact: Option<String>,
    ) {
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        if let Err(e) = account.update_contacts(&contacts).await {
            tracing::warn!(error = %e, "could not update the ACME account's contact to {}", contact.as_deref().unwrap_or("none"));
            return;
        }
        stored.contact = contact.clone();
        let audit = AuditEntry::new(
            None,
            "tls.acme_account.contact",
            Some(self.settings.directory.clone()),
        );
        match blocking(&self.store, move |s| s.put_acme_account(&stored, &audit)).await {
            Ok(()) => tracing::info!(
                contact = contact.as_deref().unwrap_or("-"),
                "ACME account contact updated"
            ),
            Err(e) => tracing::warn!(error = %e, "could not store the ACME account's new contact"),
        }
    }

    /// One order: challenges, issuance, checks. The certificate is not installed yet.
    async fn order(&self, account: &Account) -> Result<(LoadedCert, String, String), Failed> {
        let identifiers: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| Failed::acme("create the order", e))?;
        let mut published = Published::new(&self.challenges);
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| Failed::acme("fetch an authorization", e))?;
                let name = authz.identifier().to_string();
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(Failed::new(
                            "authorize",
                            format!("the authorization for {name} is {other:?}"),
                            Hint::Reachability,
                        ))
                    }
                }
                let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                    Failed::new(
                        "choose a challenge",
                        format!("the CA offers no HTTP-01 challenge for {name}"),
                        Hint::None,
                    )
                })?;
                published.add(&challenge.token, challenge.key_authorization().as_str());
                tracing::info!(domain = %name, token = %challenge.token, "HTTP-01 challenge published; asking the CA to validate");
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| Failed::acme("start validation", e))?;
            }
        }
        match order.poll_ready(&polling()).await {
            Ok(OrderStatus::Ready) => {}
            Ok(status) => {
                let why = validation_errors(&mut order)
                    .await
                    .unwrap_or_else(|| "the CA gave no reason".to_string());
                return Err(Failed::new(
                    "validate",
                    format!("the order is {status:?}: {why}"),
                    Hint::Reachability,
                ));
            }
            Err(e) => {
                let mut failed = Failed::acme("validate", e);
                // The CA's per-name reasons say more than the order's summary.
                if let Some(why) = validation_errors(&mut order).await {
                    failed.detail = why;
                }
                if failed.hint == Hint::None {
                    failed.hint = Hint::Reachability;
                }
                return Err(failed);
            }
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| Failed::acme("finalize the order", e))?;
        let chain_pem = order
            .poll_certificate(&polling())
            .await
            .map_err(|e| Failed::acme("download the certificate", e))?;
        drop(published);
        let loaded = cert::load_pem(chain_pem.as_bytes(), key_pem.as_bytes())
            .map_err(|e| Failed::new("check the issued certificate", e, Hint::None))?;
        Ok((loaded, chain_pem, key_pem))
    }

    /// Account (cached across attempts) + order + store + install.
    async fn obtain(&self, account: &mut Option<Account>) -> Result<LoadedCert, Failed> {
        let acct = match account {
            Some(a) => a.clone(),
            None => {
                let a = self.account().await?;
                *account = Some(a.clone());
                a
            }
        };
        let (loaded, chain_pem, key_pem) = match self.order(&acct).await {
            Ok(r) => r,
            Err(f) => {
                if f.hint == Hint::AccountGone {
                    *account = None;
                    let directory = self.settings.directory.clone();
                    let audit =
                        AuditEntry::new(None, "tls.acme_account.forget", Some(directory.clone()));
                    if let Err(e) = blocking(&self.store, move |s| {
                        s.delete_acme_account(&directory, &audit)
                    })
                    .await
                    {
                        tracing::warn!(error = %e, "could not forget the stale ACME account");
                    }
                }
                return Err(f);
            }
        };
        let record = StoredCertificate {
            name: self.settings.certificate_name(),
            directory: self.settings.directory.clone(),
            domains: self.settings.domains.clone(),
            chain_pem,
            key_pem,
            not_before: loaded.validity.not_before,
            not_after: loaded.validity.not_after,
            issued_at: OffsetDateTime::now_utc(),
        };
        let audit = AuditEntry::new(
            None,
            "tls.certificate.issue",
            Some(self.settings.domains.join(",")),
        );
        // Serve it even if it cannot be stored: it is valid; only a restart would
        // order again.
        self.resolver.set(loaded.key.clone());
        if let Err(e) = blocking(&self.store, move |s| s.put_certificate(&record, &audit)).await {
            tracing::error!(error = %e, "the new certificate is served but could not be stored; a restart will order another");
        }
        Ok(loaded)
    }

    async fn run(&self, shutdown: &mut ShutdownWatch) {
        let domains = self.settings.domains.join(",");
        let mut validity = self.initial;
        let mut failure: Option<Failure> = None;
        let mut account: Option<Account> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = OffsetDateTime::now_utc();
            let due = schedule::next_attempt(now, validity.as_ref(), failure.as_ref());
            if due > now {
                tokio::select! {
                    _ = tokio::time::sleep(schedule::sleep_for(now, due)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
            tracing::info!(
                domains = %domains,
                directory = %self.settings.directory,
                "{} the TLS certificate",
                if validity.is_some() { "renewing" } else { "ordering" }
            );
            let attempt = tokio::time::timeout(ORDER_TIMEOUT, self.obtain(&mut account));
            let result = tokio::select! {
                r = attempt => r.unwrap_or_else(|_| Err(Failed::new(
                    "finish in time",
                    format!("no certificate after {} s", ORDER_TIMEOUT.as_secs()),
                    Hint::Outbound,
                ))),
                _ = shutdown.changed() => return,
            };
            let now = OffsetDateTime::now_utc();
            match result {
                Ok(c) => {
                    tracing::info!(
                        domains = %domains,
                        serial = %c.serial,
                        renew_at = %cert::when(schedule::renew_at(&c.validity)),
                        "TLS certificate installed; {}",
                        cert::describe_expiry(&c.validity, now)
                    );
                    validity = Some(c.validity);
                    failure = None;
                }
                Err(f) => {
                    let count = failure.map_or(1, |f| f.count.saturating_add(1));
                    let next = Failure { at: now, count };
                    let retry_at = schedule::next_attempt(now, validity.as_ref(), Some(&next));
                    failure = Some(next);
                    let serving = match &validity {
                        Some(v) => format!(
                            "still serving the current certificate ({})",
                            cert::describe_expiry(v, now)
                        ),
                        None => "HTTPS has no certificate until then".to_string(),
                    };
                    self.alerts.publish(crate::alerts::Event::new(
                        crate::alerts::EventKind::CertRenewalFailed,
                        None,
                        format!(
                            "ACME order for {domains} failed at step \"{}\": {}; retrying at {}; {serving}",
                            f.step,
                            f.detail,
                            cert::when(retry_at)
                        ),
                    ));
                    tracing::error!(
                        failures = count,
                        retry_at = %cert::when(retry_at),
                        "ACME order for {domains} failed at step \"{}\": {}; {}. Retrying at {}; {serving}",
                        f.step,
                        f.detail,
                        advice(f.hint, &self.settings),
                        cert::when(retry_at),
                    );
                }
            }
        }
    }
}

/// The CA's reasons, per name, for an order that did not become ready.
async fn validation_errors(order: &mut Order) -> Option<String> {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(mut authz) = authz else { continue };
        let name = authz.identifier().to_string();
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for ch in &state.challenges {
            if let Some(p) = &ch.error {
                reasons.push(format!(
                    "{name}: {}",
                    p.detail.as_deref().unwrap_or("validation failed")
                ));
            }
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[async_trait]
impl BackgroundService for AcmeManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.run(&mut shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca_file: Option<PathBuf>) -> AcmeSettings {
        AcmeSettings {
            domains: vec!["a.example".into(), "b.example".into()],
            email: None,
            directory: "https://ca.example/dir".into(),
            ca_file,
        }
    }

    #[test]
    fn problem_types_map_to_advice() {
        let s = settings(None);
        let reach = advice(hint_for(Some("urn:ietf:params:acme:error:connection")), &s);
        assert!(reach.contains("a.example, b.example"), "{reach}");
        assert!(reach.contains("port 80"), "{reach}");
        assert_eq!(
            hint_for(Some("urn:ietf:params:acme:error:rateLimited")),
            Hint::RateLimited
        );
        assert_eq!(
            hint_for(Some("urn:ietf:params:acme:error:accountDoesNotExist")),
            Hint::AccountGone
        );
        assert_eq!(
            hint_for(Some("urn:ietf:params:acme:error:malformed")),
            Hint::None
        );
        assert_eq!(hint_for(None), Hint::None);
        let out = advice(Hint::Outbound, &settings(Some("/x.pem".into())));
        assert!(
            out.contains("https://ca.example/dir") && out.contains("acme_ca_file"),
            "{out}"
        );
    }

    #[test]
    fn published_answers_are_withdrawn_when_the_attempt_ends() {
        let c = Challenges::default();
        {
            let mut p = Published::new(&c);
            p.add("tok1", "tok1.key");
            p.add("tok2", "tok2.key");
            assert_eq!(c.answer("tok1").as_deref(), Some("tok1.key"));
        }
        assert!(c.is_empty());
    }

    #[test]
    fn acme_ca_file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = http_client(Some(&missing)).err().unwrap();
        assert!(e.starts_with("acme_ca_file "), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let e = http_client(Some(&empty)).err().unwrap();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
