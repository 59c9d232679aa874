//! ACL files in Mosquitto's syntax, and their evaluation.
//!
//! ```text
//! # Rules before any `user` line are the anonymous section: clients without a user name.
//! topic read public/#
//!
//! user alice
//! topic readwrite sensors/#
//! topic deny sensors/secret/#
//!
//! # Patterns apply to every client; %c is the client id, %u the user name.
//! pattern write devices/%c/status
//! pattern read users/%u/#
//! ```
//!
//! - `topic [read|write|readwrite|deny] FILTER`: a rule for the section it is in (`readwrite`
//!   when the access word is left out, as in Mosquitto). The filter is the rest of the line.
//! - `user NAME` starts the section of user NAME (the rest of the line).
//! - `pattern [read|write|readwrite|deny] FILTER`: a rule for every client, with `%c` and `%u`
//!   replaced. A pattern with `%u` does not apply to clients without a user name; an allowing
//!   pattern does not apply when the value put in contains `/`, `+` or `#` (so a client cannot
//!   widen its rights by its choice of id), a `deny` pattern still does.
//! - Lines starting with `#` and blank lines are ignored; anything else is an error naming the
//!   line.
//!
//! A client with a user name gets the rules of its user section and the patterns; a client
//! without one gets the anonymous section and the patterns. What no rule allows is denied, and a
//! `deny` rule wins over every allowing one:
//! - PUBLISH to topic `T`: allowed when a `write`/`readwrite` rule matches `T` and no `deny`
//!   rule matches it.
//! - Each delivery of a message on `T` ([`Access::Receive`]): the same with `read`/`readwrite`.
//!   This is what keeps a subscriber to `#` from receiving topics it may not read.
//! - SUBSCRIBE to filter `F` (the filter of `$share/GROUP/F`): allowed when one
//!   `read`/`readwrite` rule *covers* `F`, that is, matches every topic `F` can match (`a/#`
//!   covers `a/+/b`, `a/b` and `a/#`; `a/+` does not cover `a/#`; `#` does not cover `$SYS/#`),
//!   and no `deny` rule covers `F` (a subscription whose every topic is denied is refused). A
//!   `deny` rule that covers only part of `F` leaves the subscription allowed and filters the
//!   deliveries instead.

use std::path::Path;

use femtomq_core::broker::Access;
use femtomq_core::topic::{filter_matches, parse_filter};

use super::AuthFileError;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rights {
    /// Receive and subscribe.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Nothing, whatever other rules say.
    Deny,
}

impl Rights {
    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Rights::ReadWrite, _)
                | (Rights::Read, Access::Receive | Access::Subscribe)
                | (Rights::Write, Access::Publish)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    rights: Rights,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    /// Rules by user, sorted by user name (one entry each) for binary search. Not a HashMap:
    /// the minimal build then carries no hash table or SipHash code (a few KB).
    users: Vec<(String, Vec<Rule>)>,
    patterns: Vec<Rule>,
}

impl AclFile {
    /// Reads and parses `path`; errors name the file and line.
    pub fn load(path: &Path) -> Result<AclFile, AuthFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthFileError::new(path, None, format!("cannot read: {e}")))?;
        AclFile::parse(&text, path)
    }

    /// Parses ACL `text` (named `path` in errors).
    pub fn parse(text: &str, path: &Path) -> Result<AclFile, AuthFileError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |message: String| AuthFileError::new(path, Some(index + 1), message);
            let (keyword, rest) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("`user` needs a user name".into()));
                    }
                    acl.user_rules(rest);
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let (rights, filter) = match rest.split_once(char::is_whitespace) {
                        Some((word, filter)) => match rights_word(word) {
                            Some(rights) => (rights, filter.trim()),
                            None => (Rights::ReadWrite, rest),
                        },
                        None => match rights_word(rest) {
                            Some(_) => {
                                return Err(error(format!("`{keyword} {rest}` needs a topic")));
                            }
                            None => (Rights::ReadWrite, rest),
                        },
                    };
                    if filter.is_empty() {
                        return Err(error(format!("`{keyword}` needs a topic")));
                    }
                    if let Err(e) = parse_filter(filter) {
                        return Err(error(format!(
                            "`{filter}` is not a valid topic filter: {e:?}"
                        )));
                    }
                    let rule = Rule {
                        rights,
                        filter: filter.to_string(),
                    };
                    match (keyword, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(user)) => acl.user_rules(user).push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                other => {
                    return Err(error(format!(
                        "unknown keyword `{other}` (expected user, topic or pattern)"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// The rules of `user`, an empty list added in name order if it has none yet.
    fn user_rules(&mut self, user: &str) -> &mut Vec<Rule> {
        let index = match self
            .users
            .binary_search_by(|(name, _)| name.as_str().cmp(user))
        {
            Ok(index) => index,
            Err(index) => {
                self.users.insert(index, (user.to_string(), Vec::new()));
                index
            }
        };
        &mut self.users[index].1
    }

    /// Whether the client may perform `access` on `topic` (a topic name, or a filter for
    /// [`Access::Subscribe`]); see the module documentation for the rules.
    pub fn allows(
        &self,
        client_id: &str,
        username: Option<&str>,
        access: Access,
        topic: &str,
    ) -> bool {
        let section = match username {
            Some(user) => self
                .users
                .binary_search_by(|(name, _)| name.as_str().cmp(user))
                .map_or(&[][..], |index| self.users[index].1.as_slice()),
            None => &self.anonymous[..],
        };
        let subscription = match access {
            Access::Subscribe => match parse_filter(topic) {
                Ok(parsed) => Some(parsed.filter),
                Err(_) => return false,
            },
            _ => None,
        };
        let applies = |filter: &str| match subscription {
            Some(wanted) => filter_covers(filter, wanted),
            None => filter_matches(filter, topic),
        };
        let mut allowed = false;
        let mut substituted = String::new();
        let rules = section
            .iter()
            .map(|rule| (rule, false))
            .chain(self.patterns.iter().map(|rule| (rule, true)));
        for (rule, pattern) in rules {
            let filter = if pattern {
                match substitute(&rule.filter, client_id, username, &mut substituted) {
                    Substituted::Clean => substituted.as_str(),
                    Substituted::Wildcards if rule.rights == Rights::Deny => substituted.as_str(),
                    Substituted::Wildcards | Substituted::NoUser => continue,
                }
            } else {
                rule.filter.as_str()
            };
            if rule.rights == Rights::Deny {
                if applies(filter) {
                    return false;
                }
            } else if !allowed && rule.rights.grants(access) && applies(filter) {
                allowed = true;
            }
        }
        allowed
    }
}

fn rights_word(word: &str) -> Option<Rights> {
    Some(match word {
        "read" => Rights::Read,
        "write" => Rights::Write,
        "readwrite" => Rights::ReadWrite,
        "deny" => Rights::Deny,
        _ => return None,
    })
}

enum Substituted {
    /// Replaced; the values put in had no `/`, `+` or `#`.
    Clean,
    /// Replaced, but a value put in had `/`, `+` or `#`.
    Wildcards,
    /// The pattern has `%u` and the client no user name.
    NoUser,
}

fn substitute(
    pattern: &str,
    client_id: &str,
    username: Option<&str>,
    out: &mut String,
) -> Substituted {
    out.clear();
    let mut clean = true;
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let value = match rest[at + 1..].chars().next() {
            Some('c') => Some(client_id),
            Some('u') => match username {
                Some(user) => Some(user),
                None => return Substituted::NoUser,
            },
            _ => None,
        };
        match value {
            Some(value) => {
                clean &= !value.contains(['/', '+', '#']);
                out.push_str(value);
                rest = &rest[at + 2..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    if clean {
        Substituted::Clean
    } else {
        Substituted::Wildcards
    }
}

/// True when every topic that `filter` matches is matched by `rule` (both valid filters,
/// without `$share/`).
pub fn filter_covers(rule: &str, filter: &str) -> bool {
    // A rule starting with a wildcard matches no `$` topic; a filter whose first level is
    // literal and starts with `$` can match only such topics [MQTT-4.7.2-1].
    if rule.starts_with(['+', '#']) && filter.starts_with('$') {
        return false;
    }
    let mut wanted = filter.split('/');
    for level in rule.split('/') {
        match (level, wanted.next()) {
            // `#` matches the rest, and the parent level too.
            ("#", _) => return true,
            (_, None) => return false,
            (_, Some("#")) => return false,
            ("+", Some(_)) => {}
            (_, Some("+")) => return false,
            (literal, Some(other)) => {
                if literal != other {
                    return false;
                }
            }
        }
    }
    wanted.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> AclFile {
        AclFile::parse(text, Path::new("test.acl")).unwrap()
    }

    #[test]
    fn covering_filters() {
        for (rule, filter, covers) in [
            ("#", "a/b", true),
            ("#", "#", true),
            ("#", "+/x", true),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/broker/+", true),
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a/#", "a/+/c", true),
            ("a/#", "#", false),
            ("a/#", "b/#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a", false),
            ("a/+", "a/b/c", false),
            ("a/b", "a/b", true),
            ("a/b", "a/+", false),
            ("a/b", "a/b/c", false),
            ("+/b", "x/b", true),
            ("+/b", "+/+", false),
        ] {
            assert_eq!(
                filter_covers(rule, filter),
                covers,
                "{rule} covers {filter}"
            );
        }
    }

    const FILE: &str = "\
# anonymous section
topic read public/#
topic write public/anon

user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic write commands/+
topic sensors/both/x

user bob
topic read #
topic deny private/#

pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny users/%u/inbox/blocked
";

    #[test]
    fn evaluation_table() {
        use Access::{Publish as P, Receive as R, Subscribe as S};
        let acl = acl(FILE);
        let anon = None;
        let alice = Some("alice");
        let bob = Some("bob");
        let carol = Some("carol");
        for (client, user, access, topic, allowed) in [
            // Anonymous section only.
            ("a1", anon, R, "public/x", true),
            ("a1", anon, S, "public/#", true),
            ("a1", anon, S, "#", false),
            ("a1", anon, P, "public/x", false),
            ("a1", anon, P, "public/anon", true),
            ("a1", anon, R, "sensors/t", false),
            // Users get their section, not the anonymous one.
            ("c1", alice, R, "public/x", false),
            ("c1", alice, R, "sensors/t", true),
            ("c1", alice, P, "sensors/t", true),
            ("c1", alice, S, "sensors/+/t", true),
            ("c1", alice, S, "sensors/#", true),
            // Deny wins, for exact topics and covered filters.
            ("c1", alice, R, "sensors/secret/k", false),
            ("c1", alice, P, "sensors/secret", false),
            ("c1", alice, S, "sensors/secret/#", false),
            ("c1", alice, S, "sensors/secret/+", false),
            ("c1", alice, P, "commands/reboot", true),
            ("c1", alice, R, "commands/reboot", false),
            ("c1", alice, S, "commands/+", false),
            // No access word: readwrite.
            ("c1", alice, R, "sensors/both/x", true),
            ("c1", alice, P, "sensors/both/x", true),
            // bob may subscribe to # but not receive private topics.
            ("c2", bob, S, "#", true),
            ("c2", bob, S, "$share/g/#", true),
            ("c2", bob, R, "news", true),
            ("c2", bob, R, "private/diary", false),
            ("c2", bob, S, "private/#", false),
            ("c2", bob, S, "$SYS/#", false),
            ("c2", bob, P, "news", false),
            // An unknown user has patterns only.
            ("dev7", carol, P, "devices/dev7/state", true),
            ("dev7", carol, S, "devices/dev7/#", true),
            ("dev7", carol, P, "devices/dev8/state", false),
            ("dev7", carol, R, "users/carol/inbox", true),
            ("dev7", carol, R, "users/bob/inbox", false),
            ("dev7", carol, P, "users/carol/inbox", false),
            ("dev7", carol, R, "users/carol/inbox/blocked", false),
            ("dev7", carol, R, "anything", false),
            // Patterns with %c apply to anonymous clients; those with %u do not.
            ("dev9", anon, P, "devices/dev9/x", true),
            ("dev9", anon, R, "users//inbox", false),
            // Wildcards in a client id do not widen an allowing pattern.
            ("#", carol, R, "devices/x/y", false),
            ("a/b", carol, P, "devices/a/b/c", false),
            ("+", carol, P, "devices/+/x", false),
        ] {
            assert_eq!(
                acl.allows(client, user, access, topic),
                allowed,
                "{client} {user:?} {access:?} {topic}"
            );
        }
    }

    #[test]
    fn a_deny_pattern_applies_even_with_wildcards_in_the_value() {
        let acl = acl("topic readwrite #\npattern deny %c/#\n");
        assert!(!acl.allows("+", None, Access::Publish, "x/y"));
        assert!(acl.allows("abc", None, Access::Publish, "x/y"));
        assert!(!acl.allows("abc", None, Access::Publish, "abc/y"));
    }

    #[test]
    fn each_user_gets_the_rules_of_all_its_sections_whatever_the_order_of_users() {
        let mut text = String::new();
        // Users in descending name order, and `u05` twice: the table is kept sorted on insert.
        for user in (0..10).rev() {
            text.push_str(&format!(
                "user u{user:02}
topic write own/{user}
"
            ));
        }
        text.push_str(
            "user u05
topic read extra/#
",
        );
        let acl = acl(&text);
        for user in 0..10 {
            let name = format!("u{user:02}");
            assert!(acl.allows("c", Some(&name), Access::Publish, &format!("own/{user}")));
            let other = (user + 1) % 10;
            assert!(!acl.allows("c", Some(&name), Access::Publish, &format!("own/{other}")));
            assert_eq!(
                acl.allows("c", Some(&name), Access::Receive, "extra/x"),
                user == 5,
                "{name}"
            );
        }
        assert!(!acl.allows("c", Some("u10"), Access::Publish, "own/10"));
        assert!(!acl.allows("c", None, Access::Publish, "own/1"));
    }

    #[test]
    fn an_empty_file_denies_everything() {
        let acl = acl("# nothing\n\n");
        assert!(!acl.allows("c", None, Access::Receive, "a"));
        assert!(!acl.allows("c", Some("u"), Access::Publish, "a"));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, words) in [
            ("topic read a\nfoo bar\n", 2, "unknown keyword `foo`"),
            ("\n\nuser\n", 3, "needs a user name"),
            ("topic read\n", 1, "needs a topic"),
            ("user a\ntopic read a/#/b\n", 2, "not a valid topic filter"),
            ("pattern write a+/b\n", 1, "not a valid topic filter"),
        ] {
            let error = AclFile::parse(text, Path::new("x.acl")).unwrap_err();
            assert_eq!(error.line, Some(line), "{text:?}");
            let shown = error.to_string();
            assert!(
                shown.starts_with(&format!("x.acl:{line}: ")) && shown.contains(words),
                "{shown}"
            );
        }
    }
}
