//! The fixed, in-memory support desk the demo's tools, resources and prompt read from.

use serde::Serialize;

/// One support ticket.
#[derive(Debug, Serialize)]
pub struct Ticket {
    pub id: &'static str,
    pub title: &'static str,
    pub status: &'static str,
    pub priority: &'static str,
    pub customer: &'static str,
    pub component: &'static str,
    pub created: &'static str,
    pub body: &'static str,
}

/// Every ticket, ordered by id.
pub const TICKETS: [Ticket; 8] = [
    Ticket {
        id: "T-1001",
        title: "SSO login loops back to the sign-in page after password reset",
        status: "open",
        priority: "high",
        customer: "Acme Logistics",
        component: "auth",
        created: "2026-03-02",
        body: "Since resetting their IdP password, users at Acme are redirected to the sign-in page \
               again after a successful SAML assertion. Clearing cookies does not help.",
    },
    Ticket {
        id: "T-1002",
        title: "Invoice PDF shows the wrong VAT rate for Austria",
        status: "open",
        priority: "normal",
        customer: "Bergmann GmbH",
        component: "billing",
        created: "2026-03-04",
        body: "The March invoice applies 19% VAT instead of 20% for an Austrian billing address. \
               The total in the web view is correct; only the PDF is wrong.",
    },
    Ticket {
        id: "T-1003",
        title: "CSV export times out for projects with more than 50k rows",
        status: "in_progress",
        priority: "normal",
        customer: "Northwind Traders",
        component: "export",
        created: "2026-03-05",
        body: "Exporting the 'Orders 2025' project to CSV fails with a gateway timeout after 60 \
               seconds. Smaller projects export fine.",
    },
    Ticket {
        id: "T-1004",
        title: "Webhook retries flood our endpoint after a 502",
        status: "open",
        priority: "high",
        customer: "Globex",
        component: "webhooks",
        created: "2026-03-07",
        body: "After one 502 from our side, the same event was retried about 400 times within a \
               minute. We expected exponential backoff.",
    },
    Ticket {
        id: "T-1005",
        title: "Labels are unreadable in dark mode on the settings page",
        status: "closed",
        priority: "low",
        customer: "Initech",
        component: "web-ui",
        created: "2026-02-21",
        body: "Form labels on Settings > Notifications are dark grey on a black background when \
               dark mode is on.",
    },
    Ticket {
        id: "T-1006",
        title: "Feature request: map SAML groups to workspace roles",
        status: "open",
        priority: "normal",
        customer: "Acme Logistics",
        component: "auth",
        created: "2026-03-09",
        body: "We would like SAML group claims to assign workspace roles automatically instead of \
               managing roles by hand for 300 users.",
    },
    Ticket {
        id: "T-1007",
        title: "API returns 500 when the filter list is empty",
        status: "in_progress",
        priority: "high",
        customer: "Umbrella Health",
        component: "api",
        created: "2026-03-10",
        body: "GET /v2/records?filter= returns HTTP 500 instead of an unfiltered page. A filter \
               with at least one clause works.",
    },
    Ticket {
        id: "T-1008",
        title: "Mobile app crashes when uploading a photo over 10 MB",
        status: "open",
        priority: "high",
        customer: "Stark Field Services",
        component: "mobile",
        created: "2026-03-11",
        body: "The Android app (4.2.1) closes without an error when a technician attaches a photo \
               larger than about 10 MB to a work order.",
    },
];

/// The ticket with this id, if any.
pub fn find(id: &str) -> Option<&'static Ticket> {
    TICKETS.iter().find(|t| t.id == id)
}

/// Tickets whose id, title, body, customer, component, status or priority contain every word of `query`
/// (case-insensitive), in id order.
pub fn search(query: &str) -> impl Iterator<Item = &'static Ticket> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    TICKETS.iter().filter(move |t| {
        let haystack = [t.id, t.title, t.body, t.customer, t.component, t.status, t.priority].join(" ").to_lowercase();
        words.iter().all(|w| haystack.contains(w.as_str()))
    })
}

/// Ticket ids starting with `prefix` (case-insensitive), for completion.
pub fn ids_starting_with(prefix: &str) -> Vec<&'static str> {
    let prefix = prefix.to_ascii_uppercase();
    TICKETS.iter().map(|t| t.id).filter(|id| id.starts_with(&prefix)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_matches_every_word_case_insensitively() {
        let ids: Vec<_> = search("SAML acme").map(|t| t.id).collect();
        assert_eq!(ids, ["T-1001", "T-1006"]);
        assert_eq!(search("no such words here").count(), 0);
    }

    #[test]
    fn finds_by_exact_id_only() {
        assert_eq!(find("T-1004").map(|t| t.customer), Some("Globex"));
        assert!(find("t-1004").is_none());
    }

    #[test]
    fn completes_ids_by_prefix() {
        assert_eq!(ids_starting_with("t-100").len(), 8);
        assert_eq!(ids_starting_with("T-1007"), ["T-1007"]);
        assert!(ids_starting_with("X").is_empty());
    }
}
