//! Keeping addresses and tokens out of logs and reports.

/// `alice@example.com` → `a***@example.com`; a one-letter or empty local part
/// shows nothing of it (`***@example.com`); text without `@` is `***`.
pub fn redact_address(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let mut chars = local.chars();
            match (chars.next(), chars.next()) {
                (Some(first), Some(_)) => format!("{first}***@{domain}"),
                _ => format!("***@{domain}"),
            }
        }
        None => "***".into(),
    }
}

/// Characters that can make up an e-mail address in free text.
fn address_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '=' | '@' | '\'')
}

/// Makes free text (a server's error answer) safe for logs: the secrets given
/// (the recipient, a token) are removed wherever they appear, in any case, and
/// every other address-like word is redacted.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str(&redact_address(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if address_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(if c.is_control() { ' ' } else { c });
        }
    }
    flush(&mut word, &mut out);
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        let replacement = if secret.contains('@') {
            redact_address(secret)
        } else {
            "[redacted]".into()
        };
        out = replace_ignore_ascii_case(&out, secret, &replacement);
    }
    out.chars().take(300).collect()
}

fn replace_ignore_ascii_case(text: &str, needle: &str, replacement: &str) -> String {
    let lower_text = text.to_ascii_lowercase();
    let lower_needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower_text[at..].find(&lower_needle) {
        out.push_str(&text[at..at + found]);
        out.push_str(replacement);
        at += found + needle.len();
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_redacted() {
        assert_eq!(redact_address("alice@example.com"), "a***@example.com");
        assert_eq!(redact_address("a@example.com"), "***@example.com");
        assert_eq!(redact_address("@example.com"), "***@example.com");
        assert_eq!(redact_address("no-at-sign"), "***");
        assert_eq!(
            redact_address("\u{e9}mile@exemple.fr"),
            "\u{e9}***@exemple.fr"
        );
    }

    #[test]
    fn free_text_loses_addresses_and_secrets() {
        let scrubbed = scrub(
            "550 5.1.1 <Bob.Smith@Example.com>: unknown; cc carol@example.org\r\ntoken TOKEN123 was TOKEN123",
            &["bob.smith@example.com", "token123"],
        );
        assert_eq!(
            scrubbed,
            "550 5.1.1 <B***@Example.com>: unknown; cc c***@example.org  token [redacted] was [redacted]"
        );
        assert!(!scrubbed.to_ascii_lowercase().contains("bob.smith"));
        assert_eq!(scrub("plain", &[]), "plain");
    }
}
