//! PEM certificate chain + private key → what rustls serves, plus the facts about the
//! leaf that the rest of the TLS code needs (validity, names, serial).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::schedule::Validity;

/// A certificate ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub validity: Validity,
    /// DNS names of the leaf (subject alternative names).
    pub names: Vec<String>,
    /// Serial number of the leaf, lower-case hex.
    pub serial: String,
}

/// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1) and
/// checks that the key belongs to the leaf. Errors say what is wrong with which part.
pub fn load_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate PEM cannot be read: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("the certificate PEM holds no certificate".into());
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the private key PEM holds no usable key: {e}"))?;
    let (validity, names, serial) = leaf_facts(leaf)?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not belong to the certificate".to_string()
        }
        other => format!("the private key cannot be used: {other}"),
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        validity,
        names,
        serial,
    })
}

/// The leaf's notAfter as Unix seconds (for the expiry metric); `None` if it does not
/// parse (it did when it was installed, so practically never).
pub fn not_after_unix(leaf: &CertificateDer<'_>) -> Option<f64> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp() as f64)
}

fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Validity, Vec<String>, String), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let time = |t: &x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|e| format!("the certificate's validity is out of range: {e}"))
    };
    let validity = Validity {
        not_before: time(&cert.validity().not_before)?,
        not_after: time(&cert.validity().not_after)?,
    };
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((validity, names, hex::encode(cert.raw_serial())))
}

/// A time for log lines: `2025-03-01 12:00:00 UTC`.
pub fn when(t: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| t.to_string())
}

/// When a certificate expires relative to `now`, for log lines.
pub fn describe_expiry(validity: &Validity, now: OffsetDateTime) -> String {
    let left = validity.not_after - now;
    if left.is_negative() {
        format!("expired {}", when(validity.not_after))
    } else {
        format!(
            "valid until {} ({} days left)",
            when(validity.not_after),
            left.whole_days()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_read_well() {
        let v = Validity {
            not_before: datetime!(2025-01-01 00:00 UTC),
            not_after: datetime!(2025-04-01 00:00:00.5 UTC),
        };
        assert_eq!(
            describe_expiry(&v, datetime!(2025-03-01 00:00 UTC)),
            "valid until 2025-04-01 00:00:00 UTC (31 days left)"
        );
        assert_eq!(
            describe_expiry(&v, datetime!(2025-05-01 00:00 UTC)),
            "expired 2025-04-01 00:00:00 UTC"
        );
    }

    #[test]
    fn unusable_pem_is_explained() {
        let e = load_pem(b"", b"").unwrap_err();
        assert_eq!(e, "the certificate PEM holds no certificate");
    }
}
