//! Username and password rules from `[auth]` in config: one place for every way an account is
//! made or changed (`POST /api/auth/register`, `/api/me/password`, `hearth user create`,
//! `hearth user passwd`). Pure functions; the messages are written to be shown to the person
//! who typed the value.

use crate::config::AuthSettings;

/// Whether `c` may appear in a username: ASCII letters, digits, `_`, `.` and `-`.
fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Check a username against `auth.username_min_len`/`username_max_len` and the allowed
/// characters (ASCII letters, digits, `_`, `.`, `-`). Returns the name to store (as typed:
/// nothing is trimmed or folded; uniqueness ignores ASCII case in the store), or why it is
/// refused.
pub fn validate_username(settings: &AuthSettings, username: &str) -> Result<String, String> {
    if let Some(bad) = username.chars().find(|&c| !is_username_char(c)) {
        return Err(format!(
            "username may contain only ASCII letters, digits, `_`, `.` and `-` (found {bad:?})"
        ));
    }
    // All ASCII from here on: bytes are characters.
    let len = username.len();
    let (min, max) = (settings.username_min_len, settings.username_max_len);
    if len < min || len > max {
        return Err(format!(
            "username must be {min} to {max} characters long (it has {len})"
        ));
    }
    Ok(username.to_owned())
}

/// Check a password against `auth.password_min_len`/`password_max_len`, counted in characters
/// (Unicode scalar values), so a passphrase in any script counts as it reads. Any character is
/// allowed; nothing is trimmed.
pub fn validate_password(settings: &AuthSettings, password: &str) -> Result<(), String> {
    let len = password.chars().count();
    let (min, max) = (settings.password_min_len, settings.password_max_len);
    if len < min {
        return Err(format!(
            "password must be at least {min} characters long (it has {len})"
        ));
    }
    if len > max {
        return Err(format!(
            "password must be at most {max} characters long (it has {len})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            username_min_len: 3,
            username_max_len: 8,
            password_min_len: 8,
            password_max_len: 16,
            ..AuthSettings::default()
        }
    }

    #[test]
    fn usernames_of_letters_digits_and_punctuation_within_limits_pass_unchanged() {
        for name in ["ada", "Ada.L", "a_b-c", "12345678", "x.y"] {
            assert_eq!(validate_username(&settings(), name), Ok(name.to_owned()));
        }
    }

    #[test]
    fn usernames_outside_the_length_limits_are_refused_with_the_limits() {
        for name in ["", "ab", "abcdefghi"] {
            let err = validate_username(&settings(), name).expect_err(name);
            assert!(err.contains("3 to 8 characters"), "{err}");
        }
    }

    #[test]
    fn usernames_with_spaces_symbols_or_non_ascii_letters_are_refused() {
        for name in ["a b", "ada!", "ad@m", "zoë", "ada\n", " ada", "a/b"] {
            let err = validate_username(&settings(), name).expect_err(name);
            assert!(err.contains("ASCII letters, digits"), "{name}: {err}");
        }
    }

    #[test]
    fn passwords_within_limits_pass_whatever_they_contain() {
        for pw in ["12345678", "correct horse", " spaced  ", "pässwörter"] {
            assert_eq!(validate_password(&settings(), pw), Ok(()), "{pw}");
        }
    }

    #[test]
    fn passwords_are_measured_in_characters_not_bytes() {
        // 8 characters, 16 bytes: long enough, and not too long for a 16-character limit.
        assert_eq!(validate_password(&settings(), "ééééééé1"), Ok(()));
        let err = validate_password(&settings(), "ééé").expect_err("short");
        assert!(err.contains("it has 3"), "{err}");
    }

    #[test]
    fn passwords_too_short_or_too_long_are_refused_with_the_limit() {
        let err = validate_password(&settings(), "short").expect_err("short");
        assert!(err.contains("at least 8"), "{err}");
        let err = validate_password(&settings(), "much too long a password").expect_err("long");
        assert!(err.contains("at most 16"), "{err}");
        assert!(validate_password(&settings(), "").is_err());
    }
}
