//! Where an image import reads from, and the rules that keep it from reading
//! what it must not: a path source lies inside the one import directory (no
//! `..`, no symlink out of it, a regular file), and a download reaches public
//! addresses only, unless the operator allow-listed an internal mirror. The
//! address rule is checked on the addresses actually connected to, on every
//! redirect hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Url;
use reqwest::header::LOCATION;
use serde::Deserialize;

use crate::config::Config;

/// Redirects a download follows before giving up.
const MAX_REDIRECTS: usize = 5;

/// One entry of `image_download_allowed_hosts`: a host name or IP address,
/// with or without a port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPattern {
    /// Lower-case name, or an IP address as `IpAddr` prints it.
    host: String,
    port: Option<u16>,
}

impl TryFrom<String> for HostPattern {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let invalid = || format!("{value:?} is not a host, host:port or [v6]:port");
        if let Ok(address) = value.parse::<SocketAddr>() {
            return Ok(Self {
                host: address.ip().to_string(),
                port: Some(address.port()),
            });
        }
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(Self {
                host: ip.to_string(),
                port: None,
            });
        }
        let (host, port) = match value.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse::<u16>().map_err(|_| invalid())?)),
            None => (value.as_str(), None),
        };
        let is_name = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !is_name {
            return Err(invalid());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// What an import may read: the import directory and the download rules.
#[derive(Clone, Debug)]
pub struct SourcePolicy {
    /// Absolute and without symlinks (canonical).
    pub import_dir: PathBuf,
    pub allowed_hosts: Vec<HostPattern>,
    pub allowed_networks: Vec<ipnet::IpNet>,
}

/// A checked image source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    Url(Url),
    /// Canonical, inside the import directory, a regular file when checked.
    File(PathBuf),
}

impl ImageSource {
    /// Parses what an admin gave: an `http(s)://` URL, a `file://` URL, or a
    /// path (relative ones are in the import directory). The error is the
    /// message of a `source` field error.
    pub fn parse(source: &str, policy: &SourcePolicy) -> Result<Self, String> {
        if source.starts_with("http://") || source.starts_with("https://") {
            let url = Url::parse(source).map_err(|err| format!("is not a valid URL: {err}"))?;
            if url.host().is_none() {
                return Err("is a URL without a host".to_owned());
            }
            return Ok(Self::Url(url));
        }
        let path = if source.starts_with("file://") {
            Url::parse(source)
                .ok()
                .and_then(|url| url.to_file_path().ok())
                .ok_or_else(|| "is not a valid file:// URL".to_owned())?
        } else if source.contains("://") {
            return Err("must be an http(s):// or file:// URL, or a path".to_owned());
        } else {
            PathBuf::from(source)
        };
        policy.local_file(&path).map(Self::File)
    }

    /// How the source is recorded on the image.
    pub fn stored(&self) -> String {
        match self {
            Self::Url(url) => url.to_string(),
            Self::File(path) => path.to_string_lossy().into_owned(),
        }
    }
}

impl SourcePolicy {
    /// The policy the configuration sets; its `image_import_dir` was made
    /// canonical at start.
    pub fn new(config: &Config) -> Self {
        Self {
            import_dir: config.image_import_dir(),
            allowed_hosts: config.image_download_allowed_hosts.clone(),
            allowed_networks: config.image_download_allowed_networks.clone(),
        }
    }

    /// `path`, resolved, if it is a regular file inside the import directory.
    fn local_file(&self, path: &Path) -> Result<PathBuf, String> {
        let outside = || {
            format!(
                "must be a file in the image import directory {}",
                self.import_dir.display()
            )
        };
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!("must not contain `..`; {}", outside()));
        }
        let resolved = self
            .import_dir
            .join(path)
            .canonicalize()
            .map_err(|_| format!("does not exist; it {}", outside()))?;
        if !resolved.starts_with(&self.import_dir) {
            return Err(outside());
        }
        if !resolved.is_file() {
            return Err("is not a regular file".to_owned());
        }
        Ok(resolved)
    }

    /// Opens a file source for reading, checked again: the directory may
    /// have changed since the image was registered. The last component is
    /// not followed if it became a symlink, and a FIFO cannot block the open.
    pub async fn open(&self, path: &Path) -> anyhow::Result<tokio::fs::File> {
        let path = self
            .local_file(path)
            .map_err(|why| anyhow::anyhow!("the source {} {why}", path.display()))?;
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(i32::try_from(flags.bits()).context("open flags")?)
            .open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        if !file.metadata().await?.is_file() {
            bail!("the source {} is not a regular file", path.display());
        }
        Ok(file)
    }

    /// Sends a GET to `url` and follows redirects, connecting only to
    /// addresses the policy allows. The error says why, for the log only.
    pub async fn get(&self, url: &Url) -> anyhow::Result<reqwest::Response> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let client = self.client_for(&url).await?;
            let response = client
                .get(url.clone())
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            if !response.status().is_redirection() {
                return response
                    .error_for_status()
                    .with_context(|| format!("GET {url}"));
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .with_context(|| format!("GET {url}: a redirect without a Location"))?;
            url = url
                .join(location)
                .with_context(|| format!("GET {url}: redirect to {location:?}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                bail!("redirect to a {} URL", url.scheme());
            }
        }
        bail!("more than {MAX_REDIRECTS} redirects")
    }

    /// A client for one request to `url`, following no redirect and using
    /// no proxy, whose connection can only go to the allowed addresses: a
    /// host name is pinned to the addresses resolved and checked here, so a
    /// second DNS answer cannot swap in another.
    async fn client_for(&self, url: &Url) -> anyhow::Result<reqwest::Client> {
        let port = url
            .port_or_known_default()
            .context("a URL without a port")?;
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60));
        let host = url.host_str().context("a URL without a host")?;
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        // An IP address is connected to as it is, without a resolver.
        if let Ok(ip) = literal {
            self.check_address(&ip.to_string(), ip, port)?;
            return builder.build().context("building the download client");
        }
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .collect();
        let allowed: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| self.check_address(host, a.ip(), port).is_ok())
            .collect();
        if allowed.is_empty() {
            bail!("{host} resolves to {resolved:?}, none of which may be reached");
        }
        builder
            .resolve_to_addrs(host, &allowed)
            .build()
            .context("building the download client")
    }

    /// Whether a download may connect to `ip` for `host:port`.
    fn check_address(&self, host: &str, ip: IpAddr, port: u16) -> anyhow::Result<()> {
        let host = host.to_ascii_lowercase();
        let allowed = is_public(ip)
            || self.allowed_networks.iter().any(|net| net.contains(&ip))
            || self
                .allowed_hosts
                .iter()
                .any(|p| p.host == host && p.port.is_none_or(|allowed| allowed == port));
        if !allowed {
            bail!("{ip} (for {host}:{port}) is not a public address and is not allow-listed");
        }
        Ok(())
    }
}

/// Whether `ip` is an ordinary public unicast address: not loopback,
/// private, shared (CGNAT), link-local, unspecified, multicast, broadcast
/// or reserved, also when written as an IPv4-mapped, -compatible, NAT64 or
/// 6to4 IPv6 address.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 224)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        Ipv4Addr::new(
            (high >> 8) as u8,
            (high & 0xff) as u8,
            (low >> 8) as u8,
            (low & 0xff) as u8,
        )
    };
    match segments {
        // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96
        [0, 0, 0, 0, 0, 0 | 0xffff, high, low] => {
            !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(embedded_v4(high, low))
        }
        // NAT64 and 6to4
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] | [0x2002, high, low, ..] => {
            is_public_v4(embedded_v4(high, low))
        }
        [first, ..] => {
            let unique_local = first & 0xfe00 == 0xfc00;
            let link_or_site_local = first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0;
            let multicast = first & 0xff00 == 0xff00;
            let discard = segments[..4] == [0x100, 0, 0, 0];
            !(unique_local || link_or_site_local || multicast || discard)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn internal_addresses_are_not_public_in_any_spelling() {
        for internal in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
        ] {
            assert!(!is_public(ip(internal)), "{internal} counted as public");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2a00:1450:4007:80c::200e",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(public)), "{public} counted as internal");
        }
    }

    #[test]
    fn host_patterns_take_names_addresses_and_ports() {
        let parse = |text: &str| HostPattern::try_from(text.to_owned());
        assert_eq!(
            parse("Mirror.Internal:8080"),
            Ok(HostPattern {
                host: "mirror.internal".to_owned(),
                port: Some(8080)
            })
        );
        assert_eq!(
            parse("10.0.0.5"),
            Ok(HostPattern {
                host: "10.0.0.5".to_owned(),
                port: None
            })
        );
        assert_eq!(
            parse("[::1]:81"),
            Ok(HostPattern {
                host: "::1".to_owned(),
                port: Some(81)
            })
        );
        assert!(parse("mirror:http").is_err());
        assert!(parse("http://mirror").is_err());
        assert!(parse("").is_err());
    }

    fn policy(dir: &Path) -> SourcePolicy {
        SourcePolicy {
            import_dir: dir.canonicalize().expect("canonical"),
            allowed_hosts: vec![HostPattern::try_from("127.0.0.1:4000".to_owned()).expect("ok")],
            allowed_networks: vec!["10.1.0.0/16".parse().expect("net")],
        }
    }

    #[test]
    fn allow_lists_open_exactly_what_they_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = policy(dir.path());
        assert!(
            policy
                .check_address("127.0.0.1", ip("127.0.0.1"), 4000)
                .is_ok()
        );
        assert!(
            policy
                .check_address("127.0.0.1", ip("127.0.0.1"), 4001)
                .is_err()
        );
        assert!(
            policy
                .check_address("localhost", ip("127.0.0.1"), 4000)
                .is_err()
        );
        assert!(policy.check_address("mirror", ip("10.1.2.3"), 80).is_ok());
        assert!(policy.check_address("mirror", ip("10.2.0.1"), 80).is_err());
        assert!(
            policy
                .check_address("example.org", ip("93.184.215.14"), 443)
                .is_ok()
        );
    }

    #[test]
    fn path_sources_stay_inside_the_import_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let imports = dir.path().join("imports");
        std::fs::create_dir(&imports).expect("mkdir");
        std::fs::write(imports.join("disk.img"), b"x").expect("write");
        std::fs::write(dir.path().join("outside.img"), b"x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("outside.img"), imports.join("link.img"))
            .expect("symlink");
        std::os::unix::fs::symlink(imports.join("disk.img"), imports.join("inner.img"))
            .expect("symlink");
        std::fs::create_dir(imports.join("sub")).expect("mkdir");
        let policy = policy(&imports);
        let inside = policy.import_dir.join("disk.img");

        for good in ["disk.img", "inner.img", "./disk.img"] {
            assert_eq!(
                ImageSource::parse(good, &policy),
                Ok(ImageSource::File(inside.clone())),
                "{good}"
            );
        }
        let absolute = inside.to_str().expect("utf-8").to_owned();
        assert_eq!(
            ImageSource::parse(&format!("file://{absolute}"), &policy),
            Ok(ImageSource::File(inside.clone()))
        );
        for bad in [
            "../outside.img",
            "sub/../disk.img",
            "link.img",
            "/etc/passwd",
            "file:///etc/passwd",
            "/proc/self/environ",
            "sub",
            "missing.img",
            "ftp://example.org/disk.img",
        ] {
            assert!(ImageSource::parse(bad, &policy).is_err(), "{bad} accepted");
        }
    }
}
