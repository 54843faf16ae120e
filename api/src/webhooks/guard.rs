//! Where a webhook may be sent: never to loopback, private, link-local,
//! shared, multicast or unspecified addresses unless the operator allows
//! private ones (`--webhook-allow-private`, for a farm's own receivers and
//! tests). Checked at registration and again at each delivery, on the
//! addresses the name resolves to then (the request goes to the address
//! checked, so a name that changes its answer cannot slip past).

use std::net::{IpAddr, SocketAddr};

/// Whether `ip` is a public address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not `http://host[:port]/…` (this build sends no TLS).
    #[error("the URL must be http://host[:port]/path (this build cannot send https)")]
    Scheme,
    /// The host does not resolve.
    #[error("the host does not resolve")]
    Unresolved,
    /// Only private, loopback or link-local addresses.
    #[error("the host resolves to a private, loopback or link-local address")]
    Private,
}

/// The address a delivery to `url` goes to, and the host and port it
/// names.
pub async fn resolve(
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<(String, SocketAddr), Refused> {
    if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Scheme);
    }
    let host = url.host_str().ok_or(Refused::Scheme)?.to_string();
    let port = url.port_or_known_default().ok_or(Refused::Scheme)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| Refused::Unresolved)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refused::Unresolved);
    }
    // Every address must pass: a name with one private answer is refused.
    if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(Refused::Private);
    }
    Ok((host, addrs[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
