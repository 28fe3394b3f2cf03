//! Protocol revisions and the two eras they fall into.

use std::fmt;

/// The era a protocol revision belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Era {
    /// 2024-11-05 … 2025-11-25: `initialize` handshake, sessions.
    Legacy,
    /// 2026-07-28 and later: stateless, per-request `_meta`, `server/discover`.
    Modern,
}

/// A protocol revision the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl ProtocolVersion {
    /// Every revision, oldest first.
    pub const ALL: [ProtocolVersion; 5] =
        [Self::V2024_11_05, Self::V2025_03_26, Self::V2025_06_18, Self::V2025_11_25, Self::V2026_07_28];
    /// The newest session-based revision.
    pub const LATEST_LEGACY: ProtocolVersion = Self::V2025_11_25;
    /// The newest revision.
    pub const LATEST: ProtocolVersion = Self::V2026_07_28;
    /// What a legacy HTTP request without `MCP-Protocol-Version` is assumed to speak (per 2025-06-18).
    pub const HTTP_DEFAULT: ProtocolVersion = Self::V2025_03_26;

    /// Parses the revision string, `None` if the gateway does not speak it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The revision string as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2024_11_05 => "2024-11-05",
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    /// Which era the revision belongs to.
    pub fn era(self) -> Era {
        match self {
            Self::V2026_07_28 => Era::Modern,
            _ => Era::Legacy,
        }
    }

    /// The revisions of one era, newest first.
    pub fn of_era(era: Era) -> impl Iterator<Item = ProtocolVersion> {
        Self::ALL.into_iter().rev().filter(move |v| v.era() == era)
    }

    /// Whether JSON-RPC batches are allowed (only 2025-03-26 allowed them).
    pub fn allows_batches(self) -> bool {
        self == Self::V2025_03_26
    }

    /// Negotiates a legacy `initialize`: the requested version if spoken, else the newest legacy one.
    pub fn negotiate_legacy(requested: &str) -> ProtocolVersion {
        match Self::parse(requested) {
            Some(v) if v.era() == Era::Legacy => v,
            _ => Self::LATEST_LEGACY,
        }
    }

    /// The supported revision strings, newest first.
    pub fn supported_strings() -> Vec<&'static str> {
        Self::ALL.iter().rev().map(|v| v.as_str()).collect()
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_revision_and_rejects_unknown() {
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ProtocolVersion::parse("2099-01-01"), None);
        assert_eq!(ProtocolVersion::V2026_07_28.era(), Era::Modern);
        assert_eq!(ProtocolVersion::V2025_06_18.era(), Era::Legacy);
    }

    #[test]
    fn legacy_negotiation_falls_back_to_newest_legacy() {
        assert_eq!(ProtocolVersion::negotiate_legacy("2025-06-18"), ProtocolVersion::V2025_06_18);
        assert_eq!(ProtocolVersion::negotiate_legacy("1999-01-01"), ProtocolVersion::V2025_11_25);
        assert_eq!(ProtocolVersion::negotiate_legacy("2026-07-28"), ProtocolVersion::V2025_11_25);
    }
}
