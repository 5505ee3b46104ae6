//! The provider-neutral event catalogue (version 1). Providers map their own types onto it
//! so a handler can subscribe to `payment.succeeded` whoever the PSP is; the provider's own
//! type always travels beside it. Custom providers map by configuration, checked against
//! [`ALL`] so a typo is a config error, not a silently unroutable event.

pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub const PAYMENT_FAILED: &str = "payment.failed";
pub const PAYMENT_PENDING: &str = "payment.pending";
pub const PAYMENT_REFUNDED: &str = "payment.refunded";
pub const PAYMENT_DISPUTED: &str = "payment.disputed";
pub const PAYMENT_CANCELED: &str = "payment.canceled";
pub const PAYOUT_PAID: &str = "payout.paid";
pub const PAYOUT_FAILED: &str = "payout.failed";
pub const SUBSCRIPTION_CREATED: &str = "subscription.created";
pub const SUBSCRIPTION_UPDATED: &str = "subscription.updated";
pub const SUBSCRIPTION_CANCELED: &str = "subscription.canceled";
pub const ORDER_CREATED: &str = "order.created";
pub const ORDER_UPDATED: &str = "order.updated";
pub const ORDER_PAID: &str = "order.paid";
pub const ORDER_CANCELED: &str = "order.canceled";
pub const KYC_VERIFIED: &str = "kyc.verified";
pub const KYC_REJECTED: &str = "kyc.rejected";
pub const KYC_PENDING: &str = "kyc.pending";
pub const ACCOUNT_REGISTERED: &str = "account.registered";
pub const ACCOUNT_UPDATED: &str = "account.updated";
pub const SESSION_STARTED: &str = "session.started";
pub const SESSION_ENDED: &str = "session.ended";
pub const BET_PLACED: &str = "bet.placed";
pub const WIN_SETTLED: &str = "win.settled";
pub const BALANCE_UPDATED: &str = "balance.updated";
pub const MESSAGE_RECEIVED: &str = "message.received";
pub const MESSAGE_SENT: &str = "message.sent";
pub const MESSAGE_DELIVERED: &str = "message.delivered";
pub const MESSAGE_OPENED: &str = "message.opened";
pub const MESSAGE_CLICKED: &str = "message.clicked";
pub const MESSAGE_BOUNCED: &str = "message.bounced";
pub const MESSAGE_FAILED: &str = "message.failed";
pub const MESSAGE_COMPLAINED: &str = "message.complained";
pub const MESSAGE_UNSUBSCRIBED: &str = "message.unsubscribed";
pub const CHAT_MESSAGE: &str = "chat.message";
pub const CHAT_INTERACTION: &str = "chat.interaction";
pub const CALL_STATUS: &str = "call.status";
pub const MEETING_STARTED: &str = "meeting.started";
pub const MEETING_ENDED: &str = "meeting.ended";
pub const CODE_PUSHED: &str = "code.pushed";
pub const ISSUE_CHANGED: &str = "issue.changed";
pub const WEBHOOK_PING: &str = "webhook.ping";

/// Every canonical type, for validating configured mappings.
pub const ALL: &[&str] = &[
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    PAYMENT_PENDING,
    PAYMENT_REFUNDED,
    PAYMENT_DISPUTED,
    PAYMENT_CANCELED,
    PAYOUT_PAID,
    PAYOUT_FAILED,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_CANCELED,
    ORDER_CREATED,
    ORDER_UPDATED,
    ORDER_PAID,
    ORDER_CANCELED,
    KYC_VERIFIED,
    KYC_REJECTED,
    KYC_PENDING,
    ACCOUNT_REGISTERED,
    ACCOUNT_UPDATED,
    SESSION_STARTED,
    SESSION_ENDED,
    BET_PLACED,
    WIN_SETTLED,
    BALANCE_UPDATED,
    MESSAGE_RECEIVED,
    MESSAGE_SENT,
    MESSAGE_DELIVERED,
    MESSAGE_OPENED,
    MESSAGE_CLICKED,
    MESSAGE_BOUNCED,
    MESSAGE_FAILED,
    MESSAGE_COMPLAINED,
    MESSAGE_UNSUBSCRIBED,
    CHAT_MESSAGE,
    CHAT_INTERACTION,
    CALL_STATUS,
    MEETING_STARTED,
    MEETING_ENDED,
    CODE_PUSHED,
    ISSUE_CHANGED,
    WEBHOOK_PING,
];

/// The catalogue's own spelling of `name`, if it is in the catalogue.
pub fn lookup(name: &str) -> Option<&'static str> {
    ALL.iter().copied().find(|c| *c == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_dotted() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(seen.insert(*name), "{name} listed twice");
            let (family, verb) = name.split_once('.').expect("family.verb");
            assert!(!family.is_empty() && !verb.is_empty() && !verb.contains('.'));
        }
        assert_eq!(lookup("payment.succeeded"), Some(PAYMENT_SUCCEEDED));
        assert_eq!(lookup("payment.succeded"), None);
    }
}
