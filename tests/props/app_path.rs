//! The app path rules (`proxy::app_path`): what an app is sent for any request target.
//! The same pipeline both paths use (the tunnel and pingora's HTTP path).

use proptest::collection::vec;
use proptest::prelude::*;
use rserve_proxy::paths;
use rserve_proxy::proxy::app_path::{check as path_check, for_app, normalize};

use super::{check, Outcome};

/// Targets built from the pieces that matter: dot-segments (plain and encoded), encoded
/// slashes, backslashes and NUL, admin segments, a slug, and a query.
fn target() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just(".%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("%00".to_string()),
        Just("\\".to_string()),
        Just("api".to_string()),
        Just("health".to_string()),
        Just("app1".to_string()),
        Just("".to_string()),
        "[a-z0-9._~%-]{0,6}",
    ];
    (vec(piece, 0..8), proptest::option::of("[a-z=&./%]{0,8}")).prop_map(|(segs, q)| {
        let mut t = format!("/{}", segs.join("/"));
        if let Some(q) = q {
            t.push('?');
            t.push_str(&q);
        }
        t
    })
}

fn path_of(t: &str) -> &str {
    t.split('?').next().unwrap_or("")
}

fn dotless(path: &str) -> bool {
    path.split('/').all(|s| s != "." && s != "..")
}

/// Never outside the app: what an app is sent has no dot-segments, passes the checks,
/// is stable, and put back under its slug resolves to the same app and path; a target
/// that is not for an app is an admin path once normalised.
pub fn for_app_stays_under_its_slug(cases: u32) -> Outcome {
    check(cases, target(), |t| {
        let n = normalize(&t).into_owned();
        prop_assert!(dotless(path_of(&n)), "{t:?} normalised to {n:?}");
        prop_assert_eq!(
            normalize(&n).into_owned(),
            n.clone(),
            "normalize is not idempotent"
        );
        match for_app(&t) {
            Err(_) => {}
            Ok(None) => {
                prop_assert!(paths::is_admin_segment(paths::first_segment(&n)));
            }
            Ok(Some((slug, fwd))) => {
                prop_assert!(fwd.starts_with('/'));
                prop_assert!(dotless(path_of(&fwd)), "{t:?} sent as {fwd:?}");
                prop_assert!(path_check(&fwd).is_ok());
                let lower = path_of(&fwd).to_ascii_lowercase();
                prop_assert!(
                    !lower.contains("%2f") && !lower.contains("%00") && !lower.contains("%5c")
                );
                prop_assert!(!paths::is_admin_segment(&slug));
                let again = format!("/{slug}{fwd}");
                prop_assert_eq!(for_app(&again), Ok(Some((slug.clone(), fwd.clone()))));
            }
        }
        Ok(())
    })
}
