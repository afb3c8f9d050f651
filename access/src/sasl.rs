//! What IMAP and POP3 share around [`halyard_directory::sasl`]: the TLS facts of a client
//! connection (channel bindings, the client certificate's identity) and the throttle gate.

use std::net::IpAddr;
use std::sync::Arc;

use halyard_directory::sasl::{Mechanism, TlsFacts};

use crate::Shared;
use crate::imap::conn::Conn;

/// The TLS facts of `conn` under the configured EXTERNAL rule.
pub(crate) fn tls_facts(shared: &Shared, conn: &Conn) -> TlsFacts {
    let rule = shared
        .cfg
        .external_identity
        .parse::<halyard_net::ExternalIdentity>()
        .unwrap_or_default();
    TlsFacts {
        active: conn.is_tls(),
        exporter: conn.stream.tls_exporter(),
        end_point: conn.stream.tls_server_end_point(),
        client_identity: shared.cfg.tls_client_ca.as_ref().and_then(|_| {
            conn.stream
                .client_certificate()
                .and_then(|der| halyard_net::certificate_identity(&der, rule))
        }),
    }
}

/// The mechanisms to offer on `conn` (none before TLS where TLS is required for logins).
pub(crate) fn offered(shared: &Shared, conn: &Conn) -> Vec<Mechanism> {
    if shared.cfg.require_tls_for_login && !conn.is_tls() {
        return Vec::new();
    }
    halyard_directory::sasl::offered(&*shared.backend.directory, &tls_facts(shared, conn))
}

/// The failed-login throttle as a gate for [`halyard_directory::sasl::run`].
pub(crate) fn gate(shared: Arc<Shared>, ip: IpAddr) -> impl Fn(&str) -> bool + Send + Sync {
    move |login: &str| shared.limits.login_allowed(ip, login)
}

/// A login succeeded: its failures (under the uid and the address) are forgotten.
pub(crate) fn succeeded(shared: &Shared, p: &halyard_directory::Principal) {
    shared.limits.login_succeeded(&p.uid);
    shared.limits.login_succeeded(&p.mail);
}
