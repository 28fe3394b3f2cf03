//! Protocol revisions the demo speaks, and legacy `initialize` negotiation.

/// A protocol revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl Revision {
    /// Every revision, newest first (the order `supported` lists use).
    pub const ALL: [Revision; 5] =
        [Self::V2026_07_28, Self::V2025_11_25, Self::V2025_06_18, Self::V2025_03_26, Self::V2024_11_05];
    /// The stateless revision: per-request `_meta`, `server/discover`, no session.
    pub const MODERN: Revision = Self::V2026_07_28;
    /// The newest revision negotiated through `initialize`.
    pub const LATEST_LEGACY: Revision = Self::V2025_11_25;

    /// Parses a revision string, `None` when the demo does not speak it.
    pub fn parse(s: &str) -> Option<Revision> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
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

    /// Whether this is the stateless era (no `initialize`, no session).
    pub fn is_modern(self) -> bool {
        match self {
            Self::V2026_07_28 => true,
            Self::V2024_11_05 | Self::V2025_03_26 | Self::V2025_06_18 | Self::V2025_11_25 => false,
        }
    }

    /// Answers a legacy `initialize`: the requested revision when it is a legacy one we speak, else the newest legacy one.
    pub fn negotiate_legacy(requested: &str) -> Revision {
        match Self::parse(requested) {
            Some(r) if !r.is_modern() => r,
            _ => Self::LATEST_LEGACY,
        }
    }

    /// The supported revision strings, newest first.
    pub fn supported() -> [&'static str; 5] {
        Self::ALL.map(Revision::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_revision_and_rejects_unknown_strings() {
        for r in Revision::ALL {
            assert_eq!(Revision::parse(r.as_str()), Some(r));
        }
        assert_eq!(Revision::parse("2099-01-01"), None);
        assert!(Revision::V2026_07_28.is_modern());
        assert!(!Revision::V2025_11_25.is_modern());
    }

    #[test]
    fn legacy_negotiation_echoes_known_legacy_revision_else_newest_legacy() {
        assert_eq!(Revision::negotiate_legacy("2024-11-05"), Revision::V2024_11_05);
        assert_eq!(Revision::negotiate_legacy("2025-06-18"), Revision::V2025_06_18);
        assert_eq!(Revision::negotiate_legacy("1.0"), Revision::V2025_11_25);
        assert_eq!(Revision::negotiate_legacy("2026-07-28"), Revision::V2025_11_25);
    }
}
