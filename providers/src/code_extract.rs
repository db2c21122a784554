//! Finds the verification code in an SMS text or a voice-call transcript.
//!
//! Upstreams do not always parse the code themselves (HeroSMS may send an empty
//! `code` with the whole text, PVAPins only ever sends the text). The extractor
//! looks for groups of 4–8 digits, also written split (`123-456`, `123 456`) or
//! spoken digit by digit (`1 2 3 4 5 6`), and prefers the group closest to a word
//! like code/код/código/PIN/OTP/验证码. Digits that look like a phone number
//! (preceded by `+`, or more than 8 digits in one spaced cluster), a decimal
//! amount or a time (`12.50`, `10:30`), or glued to Latin letters (`ID12345`) are
//! not codes; a lone year is a code only next to a keyword.

/// Keywords that announce a code: (text in lower case, must start a word, must
/// end a word). CJK keywords have no word boundaries.
const KEYWORDS: &[(&str, bool, bool)] = &[
    ("code", true, false),
    ("codice", true, false),
    ("código", true, false),
    ("codigo", true, false),
    ("kode", true, false),
    ("kod", true, true),
    ("код", true, false),
    ("pin", true, true),
    ("otp", true, true),
    ("passcode", true, false),
    ("password", true, false),
    ("пароль", true, false),
    ("verification", true, false),
    ("verify", true, false),
    ("token", true, true),
    ("验证码", false, false),
    ("驗證碼", false, false),
    ("認証", false, false),
    ("인증", false, false),
    ("mã", true, true),
];

/// How far (in characters) a keyword may stand before / after a candidate.
const BEFORE_WINDOW: usize = 32;
const AFTER_WINDOW: usize = 40;

/// Extracts the most likely verification code, or `None` if the text has none.
pub fn extract_code(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let lower: Vec<char> = chars
        .iter()
        .map(|c| c.to_lowercase().next().unwrap_or(*c))
        .collect();
    let keywords = keyword_spans(&lower);
    candidates(&chars)
        .into_iter()
        .map(|candidate| (score(&chars, &keywords, &candidate), candidate))
        .filter(|(score, _)| *score > 0)
        // Highest score; the earliest on a tie (max_by keeps the last maximum).
        .rev()
        .max_by_key(|(score, _)| *score)
        .map(|(_, candidate)| candidate.digits)
}

/// A possible code: its digits and where it stands in the text (char indices).
#[derive(Debug)]
struct Candidate {
    digits: String,
    start: usize,
    end: usize,
}

/// Keyword occurrences as (start, end) char indices.
fn keyword_spans(lower: &[char]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for &(keyword, word_start, word_end) in KEYWORDS {
        let keyword: Vec<char> = keyword.chars().collect();
        for start in 0..lower.len().saturating_sub(keyword.len() - 1) {
            let end = start + keyword.len();
            if lower[start..end] != keyword[..] {
                continue;
            }
            let starts_word = start == 0 || !lower[start - 1].is_alphabetic();
            let ends_word = end == lower.len() || !lower[end].is_alphabetic();
            if (!word_start || starts_word) && (!word_end || ends_word) {
                spans.push((start, end));
            }
        }
    }
    spans
}

/// Separators that may split one code or one phone number into groups.
fn is_group_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '\u{a0}')
}

/// Digit groups of one cluster: runs of ASCII digits joined by single separators.
fn clusters(chars: &[char]) -> Vec<Vec<(usize, usize)>> {
    let mut clusters = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut groups = Vec::new();
        loop {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((start, i));
            let joined = i + 1 < chars.len()
                && is_group_separator(chars[i])
                && chars[i + 1].is_ascii_digit();
            if !joined {
                break;
            }
            i += 1;
        }
        clusters.push(groups);
    }
    clusters
}

fn candidates(chars: &[char]) -> Vec<Candidate> {
    let mut found = Vec::new();
    for groups in clusters(chars) {
        let (start, end) = (groups[0].0, groups[groups.len() - 1].1);
        let total: usize = groups.iter().map(|(s, e)| e - s).sum();
        let before = start.checked_sub(1).map(|i| chars[i]);
        // `+44 20 7123 4567`, `+79161234567`: a phone number, not a code.
        if before == Some('+') || (groups.len() > 1 && total > 8) {
            continue;
        }
        let lengths: Vec<usize> = groups.iter().map(|(s, e)| e - s).collect();
        let spoken = groups.len() >= 4 && lengths.iter().all(|&l| l == 1);
        let split =
            groups.len() >= 2 && lengths[0] >= 3 && lengths.iter().all(|&l| l == lengths[0]);
        if (spoken || split) && (4..=8).contains(&total) {
            let digits = groups.iter().flat_map(|&(s, e)| &chars[s..e]).collect();
            found.push(Candidate { digits, start, end });
            continue;
        }
        for (s, e) in groups {
            if (4..=8).contains(&(e - s)) && !glued(chars, s, e) {
                let digits = chars[s..e].iter().collect();
                found.push(Candidate {
                    digits,
                    start: s,
                    end: e,
                });
            }
        }
    }
    found.retain(|c| !glued(chars, c.start, c.end));
    found
}

/// Digits stuck to Latin letters (`ID12345`, `4sgLq1`), or part of a decimal
/// number or a time (`1250.00`, `10:30`).
fn glued(chars: &[char], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).map(|i| chars[i]);
    let after = chars.get(end).copied();
    let digit_beyond = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(char::is_ascii_digit)
    };
    let numeric_joint = |c: Option<char>| matches!(c, Some('.' | ',' | ':'));
    before.is_some_and(|c| c.is_ascii_alphabetic())
        || after.is_some_and(|c| c.is_ascii_alphabetic())
        || (numeric_joint(before) && digit_beyond(start.checked_sub(2)))
        || (numeric_joint(after) && digit_beyond(Some(end + 1)))
}

fn score(chars: &[char], keywords: &[(usize, usize)], candidate: &Candidate) -> i64 {
    let mut score = 1 + match candidate.digits.len() {
        6 => 3,
        5 => 2,
        _ => 1,
    };
    let near_before = keywords
        .iter()
        .filter(|&&(_, end)| end <= candidate.start && candidate.start - end <= BEFORE_WINDOW)
        .map(|&(_, end)| candidate.start - end)
        .min();
    let near_after = keywords
        .iter()
        .filter(|&&(start, _)| start >= candidate.end && start - candidate.end <= AFTER_WINDOW)
        .map(|&(start, _)| start - candidate.end)
        .min();
    if let Some(distance) = near_before {
        score += 10 + (BEFORE_WINDOW - distance) as i64 / 4;
    }
    if let Some(distance) = near_after {
        score += 6 + (AFTER_WINDOW - distance) as i64 / 8;
    }
    let before = |n: usize| candidate.start.checked_sub(n).map(|i| chars[i]);
    // `G-123456`, `FB-12345`: a service prefix in capitals.
    if before(1) == Some('-') && before(2).is_some_and(|c| c.is_ascii_uppercase()) {
        score += 8;
    }
    if matches!(before(1), Some('#' | '$' | '€' | '£' | '₽' | '¥' | '₹'))
        || chars.get(candidate.end) == Some(&'%')
    {
        score -= 6;
    }
    let year = candidate.digits.len() == 4
        && (candidate.digits.starts_with("19") || candidate.digits.starts_with("20"));
    if year && near_before.is_none() {
        score -= 6;
    }
    score
}

#[cfg(test)]
mod tests {
    use super::extract_code;

    fn check(text: &str, expect: Option<&str>) {
        assert_eq!(extract_code(text).as_deref(), expect, "in {text:?}");
    }

    #[test]
    fn finds_codes_in_realistic_messages() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Telegram code: 48291\n\nDo not give this code to anyone, even if they say they are from Telegram!", Some("48291")),
            ("<#> Your WhatsApp code: 123-456\n\nYou can also tap on this link to verify your phone: v.whatsapp.com/123456\n\nDon't share this code with others\n4sgLq1p5sV6", Some("123456")),
            ("G-123456 is your Google verification code.", Some("123456")),
            ("FB-12345 is your Facebook confirmation code", Some("12345")),
            ("Ваш код подтверждения: 7391. Никому не сообщайте его.", Some("7391")),
            ("Tu código de verificación es 902113", Some("902113")),
            ("【腾讯科技】验证码123456，用于QQ登录，5分钟内有效。", Some("123456")),
            ("[Web발신] [카카오톡] 인증번호 [482913]를 입력해 주세요.", Some("482913")),
            ("Call us at +1 800 555 0199 if this wasn't you. Your code is 5521", Some("5521")),
            ("Your appointment on 2024-05-11 at 10:30 is confirmed. Code 8841", Some("8841")),
            ("You paid $1250.00 today. Confirmation code: 665544", Some("665544")),
            ("123456 is your Instagram code. Don't share it.", Some("123456")),
            ("Your Uber code: 4821. Never share this code. Reply STOP ABC to 81025.", Some("4821")),
            ("Your verification code is 1 2 3 4 5 6. I repeat, 1 2 3 4 5 6.", Some("123456")),
            ("Your ChatGPT code is 482913", Some("482913")),
            ("Use 8472 as Microsoft account security code", Some("8472")),
            ("123456 is your Amazon OTP. Do not share it with anyone.", Some("123456")),
            ("Order 98765432 shipped on 2025-01-02. Your PIN is 2468", Some("2468")),
            ("Your Yahoo verification code is 12345678", Some("12345678")),
            ("Your code is 123 456", Some("123456")),
            ("Tinder code 384756 Do not share. @tinder.com #384756", Some("384756")),
            ("Your Discord verification code is: 5819 20", Some("5819")),
            ("Welcome to our service! Reply HELP for help.", None),
            ("Call +442071234567 now", None),
            ("Happy New Year 2025!", None),
            ("Meeting at 12:30, room 7", None),
            ("Call me on 0912 345 678 please", None),
            ("", None),
        ];
        for &(text, expect) in cases {
            check(text, expect);
        }
    }

    #[test]
    fn a_year_next_to_a_keyword_is_a_code() {
        check("Your PIN: 2019", Some("2019"));
    }
}
