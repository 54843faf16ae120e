//! Validated strings: names, identifiers, file names, e-mail addresses, URLs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses the text; see the type's documentation for the rule.
            pub fn parse(text: impl Into<String>) -> Result<Self, ValidationError> {
                let text: String = text.into();
                let check: fn(&str) -> Result<(), &'static str> = $check;
                check(&text).map_err(|why| ValidationError::new($field, why))?;
                Ok(Self(text))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn bounded_text(s: &str, max: usize) -> Result<(), &'static str> {
    if s.trim().is_empty() {
        return Err("must not be empty");
    }
    if s.trim() != s {
        return Err("must not start or end with whitespace");
    }
    if s.chars().count() > max {
        return Err("is too long");
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

validated_string!(
    /// A human-readable name (tenant, job, node, user): 1 to 200 characters,
    /// no control characters, no surrounding whitespace.
    Label, "name", |s| bounded_text(s, 200)
);

validated_string!(
    /// A free-text reason or error message: 1 to 2000 characters, not blank;
    /// newlines and tabs are allowed, other control characters are not.
    Note, "reason", |s| {
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err("must not contain control characters");
        }
        if s.trim().is_empty() {
            return Err("must not be empty");
        }
        if s.chars().count() > 2000 {
            return Err("is too long");
        }
        Ok(())
    }
);

validated_string!(
    /// A machine identifier (renderer name, renderer version, tag, node
    /// class): 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`, starting
    /// with a letter or digit.
    Identifier, "identifier", |s| {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.');
        match s.chars().next() {
            None => Err("must not be empty"),
            Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => Err("must start with a-z or 0-9"),
            _ if s.len() > 64 => Err("is too long"),
            _ if !s.chars().all(ok_char) => Err("may only contain a-z, 0-9, `_`, `-` and `.`"),
            _ => Ok(()),
        }
    }
);

validated_string!(
    /// A file name without directories: 1 to 255 bytes, no `/`, `\`,
    /// control characters, and not `.` or `..`.
    FileName, "file_name", |s| {
        if s.is_empty() {
            return Err("must not be empty");
        }
        if s.len() > 255 {
            return Err("is too long");
        }
        if s == "." || s == ".." {
            return Err("must not be `.` or `..`");
        }
        if s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
            return Err("must not contain `/`, `\\` or control characters");
        }
        Ok(())
    }
);

validated_string!(
    /// A media type such as `image/png`: `type/subtype`, printable ASCII
    /// without spaces, at most 127 bytes.
    ContentType, "content_type", |s| {
        let ok = s.len() <= 127
            && s.chars().all(|c| c.is_ascii_graphic())
            && s.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'));
        if ok { Ok(()) } else { Err("must be a media type such as image/png") }
    }
);

validated_string!(
    /// An e-mail address: one `@` with text on both sides, no whitespace, at
    /// most 254 bytes.
    Email, "email", |s| {
        let ok = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@') && domain.contains('.')
            });
        if ok { Ok(()) } else { Err("must be an e-mail address") }
    }
);

validated_string!(
    /// The public prefix of an API key, shown to users to tell keys apart:
    /// 4 to 16 characters of `A-Z`, `a-z`, `0-9`, `_`.
    KeyPrefix, "prefix", |s| {
        let ok = (4..=16).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok { Ok(()) } else { Err("must be 4 to 16 characters of A-Z, a-z, 0-9 or _") }
    }
);

validated_string!(
    /// A webhook URL: `https://` (or `http://`) followed by a host, no
    /// whitespace, at most 2048 bytes.
    WebhookUrl, "url", |s| {
        let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
        let ok = s.len() <= 2048
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
        if ok { Ok(()) } else { Err("must be an http(s) URL") }
    }
);
