//! `label_enum!`: a closed set of names declared once — each variant beside its
//! string — giving the enum, its `ALL` list and its `as_str`. Metric label values
//! are such sets: `ALL` creates every series at start, `as_str` labels it.
//!
//! A leaf: it depends on nothing. Exported (`ccrelay_protocol::label_enum!`) so the
//! server's metrics declare their label sets the same way as the protocol's.

/// Declare an enum whose variants each carry a fixed string:
///
/// ```ignore
/// label_enum! {
///     /// Why a connection closed.
///     pub enum ClosedReason {
///         /// The client closed.
///         Client => "client",
///         Idle => "idle",
///     }
/// }
/// ```
///
/// gives `ClosedReason` (`Debug, Clone, Copy, PartialEq, Eq, Hash`, plus any
/// attributes written above it), `ClosedReason::ALL` (every variant, in order),
/// `as_str` and `Display` (the string).
#[macro_export]
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string of this value (its metric label and, where it has one,
            /// its wire spelling).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
