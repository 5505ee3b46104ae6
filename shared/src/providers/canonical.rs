//! The provider-neutral event catalogue (version 1). Providers map their own types onto it
//! so a handler can subscribe to `payment.succeeded` whoever the PSP is; the provider's own
//! type always travels beside it. Custom providers map by configuration, checked against
//! [`ALL`] so a typo is a config error, not a silently unroutable event.

pub(crate) const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub(crate) const PAYMENT_FAILED: &str = "payment.failed";
pub(crate) const PAYMENT_PENDING: &str = "payment.pending";
pub(crate) const PAYMENT_REFUNDED: &str = "payment.refunded";
pub(crate) const PAYMENT_DISPUTED: &str = "payment.disputed";
pub(crate) const PAYMENT_CANCELED: &str = "payment.canceled";
pub(crate) const PAYOUT_PAID: &str = "payout.paid";
pub(crate) const PAYOUT_FAILED: &str = "payout.failed";
pub(crate) const SUBSCRIPTION_CREATED: &str = "subscription.created";
pub(crate) const SUBSCRIPTION_UPDATED: &str = "subscription.updated";
pub(crate) const SUBSCRIPTION_CANCELED: &str = "subscription.canceled";
pub(crate) const ORDER_CREATED: &str = "order.created";
pub(crate) const ORDER_UPDATED: &str = "order.updated";
pub(crate) const ORDER_PAID: &str = "order.paid";
pub(crate) const ORDER_CANCELED: &str = "order.canceled";
pub(crate) const KYC_VERIFIED: &str = "kyc.verified";
pub(crate) const KYC_REJECTED: &str = "kyc.rejected";
pub(crate) const KYC_PENDING: &str = "kyc.pending";
pub(crate) const ACCOUNT_REGISTERED: &str = "account.registered";
pub(crate) const ACCOUNT_UPDATED: &str = "account.updated";
pub(crate) const SESSION_STARTED: &str = "session.started";
pub(crate) const SESSION_ENDED: &str = "session.ended";
pub(crate) const BET_PLACED: &str = "bet.placed";
pub(crate) const WIN_SETTLED: &str = "win.settled";
pub(crate) const BALANCE_UPDATED: &str = "balance.updated";
pub(crate) const MESSAGE_RECEIVED: &str = "message.received";
pub(crate) const MESSAGE_SENT: &str = "message.sent";
pub(crate) const MESSAGE_DELIVERED: &str = "message.delivered";
pub(crate) const MESSAGE_OPENED: &str = "message.opened";
pub(crate) const MESSAGE_CLICKED: &str = "message.clicked";
pub(crate) const MESSAGE_BOUNCED: &str = "message.bounced";
pub(crate) const MESSAGE_FAILED: &str = "message.failed";
pub(crate) const MESSAGE_COMPLAINED: &str = "message.complained";
pub(crate) const MESSAGE_UNSUBSCRIBED: &str = "message.unsubscribed";
pub(crate) const CHAT_MESSAGE: &str = "chat.message";
pub(crate) const CHAT_INTERACTION: &str = "chat.interaction";
pub(crate) const CALL_STATUS: &str = "call.status";
pub(crate) const MEETING_STARTED: &str = "meeting.started";
pub(crate) const MEETING_ENDED: &str = "meeting.ended";
pub(crate) const CODE_PUSHED: &str = "code.pushed";
pub(crate) const ISSUE_CHANGED: &str = "issue.changed";
pub(crate) const WEBHOOK_PING: &str = "webhook.ping";

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
pub(crate) fn lookup(name: &str) -> Option<&'static str> {
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
