//! Notifications for devices that are not connected (PROTOCOL.md §9).
//!
//! Submodules, one concern each: [`webpush`] is the Web Push transport (VAPID key,
//! subscriptions, encryption, delivery).

pub mod webpush;
