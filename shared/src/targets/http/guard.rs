//! The SSRF guard: which addresses an HTTP target may connect to. Applied to the address
//! actually connected to (the resolver filters what DNS returns, and a literal-IP URL is
//! checked itself), never to a separate lookup made before the request — a name that
//! resolves to a public address once and to 169.254.169.254 the next time (DNS rebinding)
//! gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not public. Every class but `Public` is refused unless allow-listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressClass {
    Public,
    Unspecified,
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16).
    Private,
    /// 100.64/10, carrier-grade NAT; also where some clouds put metadata (Alibaba).
    SharedCgnat,
    /// 169.254/16 and fe80::/10.
    LinkLocal,
    /// The cloud instance metadata services: 169.254.169.254 (AWS, GCP, Azure),
    /// 169.254.170.2 (ECS task metadata), fd00:ec2::254 (AWS over IPv6).
    Metadata,
    /// fc00::/7 (and the deprecated site-local fec0::/10).
    UniqueLocal,
    Multicast,
    /// Not routable on the internet: broadcast, 240/4, benchmarking, documentation,
    /// protocol assignments, discard-only.
    Reserved,
}

impl AddressClass {
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedCgnat => "carrier-grade NAT (100.64.0.0/10)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

pub(crate) fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    if o == [169, 254, 169, 254] || o == [169, 254, 170, 2] {
        return AddressClass::Metadata;
    }
    let table: &[([u8; 4], u8, AddressClass)] = &[
        ([0, 0, 0, 0], 8, AddressClass::Unspecified),
        ([10, 0, 0, 0], 8, AddressClass::Private),
        ([100, 64, 0, 0], 10, AddressClass::SharedCgnat),
        ([127, 0, 0, 0], 8, AddressClass::Loopback),
        ([169, 254, 0, 0], 16, AddressClass::LinkLocal),
        ([172, 16, 0, 0], 12, AddressClass::Private),
        ([192, 0, 0, 0], 24, AddressClass::Reserved),
        ([192, 0, 2, 0], 24, AddressClass::Reserved),
        ([192, 168, 0, 0], 16, AddressClass::Private),
        ([198, 18, 0, 0], 15, AddressClass::Reserved),
        ([198, 51, 100, 0], 24, AddressClass::Reserved),
        ([203, 0, 113, 0], 24, AddressClass::Reserved),
        ([224, 0, 0, 0], 4, AddressClass::Multicast),
        // 240/4 includes the broadcast address 255.255.255.255.
        ([240, 0, 0, 0], 4, AddressClass::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
        .unwrap_or(AddressClass::Public)
}

/// The IPv4 address an IPv6 address carries, where the kernel or a NAT64 gateway would
/// connect to it: IPv4-mapped `::ffff:a.b.c.d`, the deprecated IPv4-compatible `::a.b.c.d`,
/// and the NAT64 well-known prefix `64:ff9b::/96`.
pub(crate) fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // `::` and `::1` are IPv6's own unspecified and loopback, not IPv4-compatible forms.
    if s[..6] == [0; 6] && u32::from(tail) > 1 {
        return Some(tail);
    }
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return Some(tail);
    }
    None
}

pub(crate) fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return AddressClass::Metadata;
    }
    let table: &[([u16; 8], u8, AddressClass)] = &[
        ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, AddressClass::Reserved),
        (
            [0x2001, 0x0db8, 0, 0, 0, 0, 0, 0],
            32,
            AddressClass::Reserved,
        ),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddressClass::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::UniqueLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddressClass::Multicast),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
        .unwrap_or(AddressClass::Public)
}

pub(crate) fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// One target's rule. `only_allowed` is set for a plain `http://` URL: unencrypted
/// delivery goes only to the allow-listed addresses, never to the internet.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    pub allow: Vec<IpNet>,
    pub only_allowed: bool,
}

impl AddressGuard {
    fn allow_listed(&self, ip: IpAddr) -> bool {
        let inner = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || inner.is_some_and(|v4| net.contains(&v4)))
    }

    /// `Ok` when the target may connect to `ip`, else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressRefusal> {
        if self.allow_listed(ip) {
            return Ok(());
        }
        if self.only_allowed {
            return Err(AddressRefusal::NotAllowListed(ip));
        }
        match classify(ip) {
            AddressClass::Public => Ok(()),
            class => Err(AddressRefusal::Private {
                ip,
                class: class.describe(),
            }),
        }
    }
}

/// Why [`AddressGuard::check`] refuses an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
    #[error("{0} is not in allow_private, and plain http:// goes only to allow-listed addresses")]
    NotAllowListed(IpAddr),
    #[error("{ip} is a {class} address (not in allow_private)")]
    Private { ip: IpAddr, class: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        use AddressClass::*;
        let table: &[(&str, AddressClass)] = &[
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("100.63.255.255", Public),
            ("100.128.0.0", Public),
            ("172.15.255.255", Public),
            ("172.32.0.0", Public),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.100.100.200", SharedCgnat),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("169.254.170.2", Metadata),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Reserved),
            ("240.0.0.1", Reserved),
            ("192.0.2.10", Reserved),
            ("198.18.0.1", Reserved),
            ("203.0.113.9", Reserved),
            // IPv6
            ("2606:4700:4700::1111", Public),
            ("2001:4860:4860::8888", Public),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fec0::1", UniqueLocal),
            ("fd00:ec2::254", Metadata),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("100::1", Reserved),
            // IPv4 inside IPv6: judged by the IPv4 address
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:7f00:1", Loopback),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", Loopback),
            ("::10.0.0.1", Private),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("64:ff9b::192.168.0.1", Private),
            ("64:ff9b::8.8.8.8", Public),
        ];
        for (text, want) in table {
            let ip: IpAddr = text.parse().expect(text);
            assert_eq!(classify(ip), *want, "{text}");
        }
    }

    #[test]
    fn the_allow_list_opens_private_addresses_and_plain_http_only_reaches_it() {
        let guard = AddressGuard {
            allow: vec!["127.0.0.1/32".parse().expect("net")],
            only_allowed: false,
        };
        assert!(guard.check("127.0.0.1".parse().expect("ip")).is_ok());
        assert!(guard.check("::ffff:127.0.0.1".parse().expect("ip")).is_ok());
        assert!(guard.check("8.8.8.8".parse().expect("ip")).is_ok());
        let err = guard
            .check("127.0.0.2".parse().expect("ip"))
            .expect_err("outside the list")
            .to_string();
        assert!(err.contains("loopback"), "{err}");
        let err = guard
            .check("169.254.169.254".parse().expect("ip"))
            .expect_err("metadata")
            .to_string();
        assert!(err.contains("metadata"), "{err}");
        assert!(guard.check("::1".parse().expect("ip")).is_err());

        let plain = AddressGuard {
            only_allowed: true,
            ..guard
        };
        assert!(plain.check("127.0.0.1".parse().expect("ip")).is_ok());
        assert!(plain.check("8.8.8.8".parse().expect("ip")).is_err());
        assert!(AddressGuard::default()
            .check("10.0.0.1".parse().expect("ip"))
            .is_err());
    }
}
