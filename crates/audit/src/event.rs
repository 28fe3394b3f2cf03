//! What the audit trail records: the kinds of event, and the partition (stream) each goes to.

/// One kind of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A governed request (`tools/call`, `prompts/get`, `resources/read`, `completion/complete`):
    /// requested, decided, and, when allowed, executed, with its result's class.
    Call,
    /// A host opened a session (`initialize`) or discovered the server (`server/discover`).
    SessionOpened,
    /// A host listed tools, prompts or resources: what it was shown.
    List,
    /// The gateway connected to an upstream.
    UpstreamConnected,
    /// The gateway read an upstream's tools, prompts and resources.
    UpstreamDiscovered,
    /// An upstream said one of its lists changed.
    UpstreamListChanged,
    /// An upstream reported another version than before.
    UpstreamVersionChanged,
    /// An upstream could not be reached.
    UpstreamUnavailable,
    /// The registry changed (an approval, a revocation, a new entry…).
    RegistryChanged,
    /// A tool's or prompt's metadata drifted from its pin and is quarantined.
    DriftQuarantined,
    /// The policy set was loaded or reloaded.
    PolicyChanged,
}

/// The streams events are kept in, each with its own chain and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partition {
    /// Governed requests.
    Calls,
    /// Sessions and lists: who saw what.
    Access,
    /// Upstreams, registry and policy.
    System,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::Call,
        Kind::SessionOpened,
        Kind::List,
        Kind::UpstreamConnected,
        Kind::UpstreamDiscovered,
        Kind::UpstreamListChanged,
        Kind::UpstreamVersionChanged,
        Kind::UpstreamUnavailable,
        Kind::RegistryChanged,
        Kind::DriftQuarantined,
        Kind::PolicyChanged,
    ];

    /// The kind's stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::SessionOpened => "session.opened",
            Kind::List => "list",
            Kind::UpstreamConnected => "upstream.connected",
            Kind::UpstreamDiscovered => "upstream.discovered",
            Kind::UpstreamListChanged => "upstream.list_changed",
            Kind::UpstreamVersionChanged => "upstream.version_changed",
            Kind::UpstreamUnavailable => "upstream.unavailable",
            Kind::RegistryChanged => "registry.changed",
            Kind::DriftQuarantined => "drift.quarantined",
            Kind::PolicyChanged => "policy.changed",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The stream the kind is recorded in.
    pub fn partition(self) -> Partition {
        match self {
            Kind::Call => Partition::Calls,
            Kind::SessionOpened | Kind::List => Partition::Access,
            Kind::UpstreamConnected
            | Kind::UpstreamDiscovered
            | Kind::UpstreamListChanged
            | Kind::UpstreamVersionChanged
            | Kind::UpstreamUnavailable
            | Kind::RegistryChanged
            | Kind::DriftQuarantined
            | Kind::PolicyChanged => Partition::System,
        }
    }
}

impl Partition {
    /// Every partition.
    pub const ALL: [Partition; 3] = [Partition::Calls, Partition::Access, Partition::System];

    /// The partition's name, the last part of its stream's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Calls => "calls",
            Partition::Access => "access",
            Partition::System => "system",
        }
    }

    /// The partition a name stands for.
    pub fn parse(name: &str) -> Option<Partition> {
        Partition::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The stream of this partition for a gateway instance: `<instance>/<partition>`.
    pub fn stream(self, instance: &str) -> String {
        format!("{instance}/{}", self.as_str())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for p in Partition::ALL {
            assert_eq!(Partition::parse(p.as_str()), Some(p));
        }
        assert_eq!(Kind::parse("nope"), None);
        assert_eq!(Partition::Calls.stream("gw-1"), "gw-1/calls");
    }
}
