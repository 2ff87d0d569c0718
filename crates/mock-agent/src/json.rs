//! A tiny ordered, compact JSON object writer.
//!
//! The real CLI's key order is part of what the mock imitates (e.g.
//! `"type":"result"` in the middle of the result object). `Obj` writes keys in
//! call order, compact (no spaces), escaping via serde_json, so each line's order
//! is spelled out where it is written. (serde_json's `preserve_order` is enabled in
//! Cargo.toml, so a `serde_json::Value` would keep insertion order too.)

use serde::Serialize;

/// A JSON object under construction; [`Obj::finish`] returns its text.
#[derive(Debug, Clone)]
pub struct Obj {
    buf: String,
    empty: bool,
}

impl Default for Obj {
    fn default() -> Self {
        Self::new()
    }
}

impl Obj {
    /// An empty object.
    pub fn new() -> Self {
        Self {
            buf: String::from("{"),
            empty: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.buf.push(',');
        }
        self.empty = false;
        push_json(&mut self.buf, key);
        self.buf.push(':');
    }

    /// Adds `key` with an already serialized JSON value.
    pub fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.buf.push_str(json);
        self
    }

    /// Adds `key` with a string value.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_json(&mut self.buf, value);
        self
    }

    /// Adds `key` with any serializable value (nested `Value` objects come out with sorted keys).
    pub fn val<T: Serialize + ?Sized>(mut self, key: &str, value: &T) -> Self {
        self.key(key);
        push_json(&mut self.buf, value);
        self
    }

    /// Adds `key` with `null`.
    pub fn null(self, key: &str) -> Self {
        self.raw(key, "null")
    }

    /// Adds `key` with a nested ordered object.
    pub fn obj(self, key: &str, value: Obj) -> Self {
        let json = value.finish();
        self.raw(key, &json)
    }

    /// Adds `key` with an array of ordered objects.
    pub fn arr(self, key: &str, items: impl IntoIterator<Item = Obj>) -> Self {
        let json = array(items);
        self.raw(key, &json)
    }

    /// Adds `key` only when `value` is `Some`.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// The finished object text.
    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// A JSON array of ordered objects.
pub fn array(items: impl IntoIterator<Item = Obj>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item.finish());
    }
    out.push(']');
    out
}

/// Compact JSON text of any serializable value.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = String::new();
    push_json(&mut out, value);
    out
}

fn push_json<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    // Serializing strings, numbers, bools and `Value`s cannot fail.
    match serde_json::to_string(value) {
        Ok(s) => out.push_str(&s),
        Err(_) => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_insertion_order_and_escapes() {
        let o = Obj::new()
            .str("z", "a\"b")
            .val("a", &1)
            .obj("m", Obj::new().null("x"))
            .arr("l", [Obj::new().str("k", "v")])
            .finish();
        assert_eq!(o, r#"{"z":"a\"b","a":1,"m":{"x":null},"l":[{"k":"v"}]}"#);
    }
}
