//! The subset of TOML that femtomq's configuration uses, parsed with exact line numbers.
//!
//! Why not the `toml` crate: it costs about 174 KB of binary (DEPENDENCIES.md) for features a
//! broker configuration never needs (dates, inline tables, dotted keys), and we want every
//! error to name the file, the line and the key. Supported: `# comments`, `[table]`,
//! `[[array_of_tables]]`, `key = value` with basic and literal strings, integers (with `_`),
//! booleans, and arrays of those (which may span lines). Anything else is a clear error.

use std::fmt;

/// A value and the line it was written on.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
    /// An array.
    Array(Vec<Value>),
}

impl Value {
    /// The TOML name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Boolean(_) => "a boolean",
            Value::Array(_) => "an array",
        }
    }
}

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// 1-based line number.
    pub line: usize,
}

/// A table: the root, a `[name]` table, or one element of a `[[name]]` array.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// The table's name (empty for the root), as written in its header.
    pub name: String,
    /// Whether it came from a `[[name]]` header.
    pub array_element: bool,
    /// Line of the header (0 for the root).
    pub line: usize,
    /// Entries in file order.
    pub entries: Vec<Entry>,
}

/// A parsed file: the root table, then every table in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// The root table first, then each table in the order of its header.
    pub tables: Vec<Table>,
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn error<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses `text`.
pub fn parse(text: &str) -> Result<Document, ParseError> {
    let mut document = Document {
        tables: vec![Table::default()],
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line));
    while let Some((number, raw)) = lines.next() {
        let line = strip_comment(raw, number)?.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix("[[") {
            let name = header
                .strip_suffix("]]")
                .map(str::trim)
                .filter(|name| is_bare_key(name));
            let Some(name) = name else {
                return error(number, format!("malformed table header `{line}`"));
            };
            document.tables.push(Table {
                name: name.to_string(),
                array_element: true,
                line: number,
                entries: Vec::new(),
            });
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .map(str::trim)
                .filter(|name| is_bare_key(name));
            let Some(name) = name else {
                return error(
                    number,
                    format!("malformed table header `{line}` (nested tables are not supported)"),
                );
            };
            if document.tables.iter().any(|t| t.name == name) {
                return error(number, format!("table `[{name}]` is defined twice"));
            }
            document.tables.push(Table {
                name: name.to_string(),
                array_element: false,
                line: number,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, rest)) = line.split_once('=') else {
            return error(number, format!("expected `key = value`, found `{line}`"));
        };
        let key = key.trim();
        if !is_bare_key(key) {
            return error(
                number,
                format!("`{key}` is not a valid key (letters, digits, `_` and `-`)"),
            );
        }
        // Value errors name the key as the configuration's own errors do: `table.key`.
        let path = match document.tables.last() {
            Some(table) if !table.name.is_empty() => format!("{}.{key}", table.name),
            _ => key.to_string(),
        };
        let named = |e: ParseError| ParseError {
            line: e.line,
            message: format!("`{path}`: {}", e.message),
        };
        let mut value_text = rest.trim().to_string();
        // An array may continue over the following lines until its brackets balance.
        while value_text.starts_with('[') && !brackets_balanced(&value_text) {
            let Some((next_number, next)) = lines.next() else {
                return error(number, format!("`{path}`: array is not closed"));
            };
            value_text.push(' ');
            value_text.push_str(strip_comment(next, next_number)?.trim());
        }
        let mut cursor = Cursor {
            text: &value_text,
            position: 0,
            line: number,
        };
        let value = cursor.value().map_err(named)?;
        cursor.skip_spaces();
        if cursor.position != value_text.len() {
            return error(
                number,
                format!(
                    "`{path}`: unexpected `{}` after the value",
                    &value_text[cursor.position..]
                ),
            );
        }
        let table = document
            .tables
            .last_mut()
            .expect("the root table always exists");
        if table.entries.iter().any(|entry| entry.key == key) {
            return error(number, format!("key `{key}` is set twice"));
        }
        table.entries.push(Entry {
            key: key.to_string(),
            value,
            line: number,
        });
    }
    Ok(document)
}

/// The line without a trailing `# comment` (a `#` inside a string is kept).
fn strip_comment(line: &str, number: usize) -> Result<&str, ParseError> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (index, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return Ok(&line[..index]),
            None => {}
        }
    }
    if quote.is_some() {
        return error(
            number,
            "string is not closed (multi-line strings are not supported)",
        );
    }
    Ok(line)
}

fn brackets_balanced(text: &str) -> bool {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '[' => depth += 1,
            None if c == ']' => depth -= 1,
            None => {}
        }
    }
    depth <= 0
}

struct Cursor<'a> {
    text: &'a str,
    position: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.position..]
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.position += rest.len() - rest.trim_start().len();
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        self.skip_spaces();
        let rest = self.rest();
        if rest.starts_with('"') {
            return self.basic_string();
        }
        if let Some(body) = rest.strip_prefix('\'') {
            let Some(end) = body.find('\'') else {
                return error(self.line, "string is not closed");
            };
            self.position += end + 2;
            return Ok(Value::String(body[..end].to_string()));
        }
        if rest.starts_with('[') {
            return self.array();
        }
        if rest.starts_with('{') {
            return error(self.line, "inline tables are not supported: use a [table]");
        }
        let end = rest.find([',', ']', ' ', '\t']).unwrap_or(rest.len());
        let word = &rest[..end];
        self.position += end;
        match word {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => {
                let digits = word.replace('_', "");
                digits.parse::<i64>().map(Value::Integer).or_else(|_| {
                    error(
                        self.line,
                        format!("`{word}` is not a string, integer, boolean or array"),
                    )
                })
            }
        }
    }

    fn basic_string(&mut self) -> Result<Value, ParseError> {
        let mut out = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    self.position += index + 1;
                    return Ok(Value::String(out));
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                        let decoded = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        let Some(decoded) = decoded else {
                            return error(self.line, format!("invalid escape `\\u{hex}`"));
                        };
                        out.push(decoded);
                    }
                    other => {
                        return error(
                            self.line,
                            format!("invalid escape `\\{}`", other.unwrap_or(' ')),
                        );
                    }
                },
                c => out.push(c),
            }
        }
        error(self.line, "string is not closed")
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        self.position += 1;
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            if let Some(rest) = self.rest().strip_prefix(']') {
                let _ = rest;
                self.position += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip_spaces();
            match self.rest().chars().next() {
                Some(',') => self.position += 1,
                Some(']') => {}
                _ => return error(self.line, "expected `,` or `]` in array"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tables_arrays_and_values_with_line_numbers() {
        let text = "workers = 1 # one\n\n[[listener]]\nurl = \"mqtt://127.0.0.1:1883\"\n[[listener]]\nurl = 'ws://x:1/#a'\n[limits]\nmax_connections = 1_000\nflags = [true,\n  false]\nname = \"a\\\"b\\u00e9\"\n";
        let document = parse(text).unwrap();
        assert_eq!(document.tables.len(), 4);
        assert_eq!(
            document.tables[0].entries[0],
            Entry {
                key: "workers".into(),
                value: Value::Integer(1),
                line: 1
            }
        );
        assert_eq!(
            document.tables[2].entries[0].value,
            Value::String("ws://x:1/#a".into())
        );
        assert!(document.tables[2].array_element);
        let limits = &document.tables[3];
        assert_eq!((limits.name.as_str(), limits.line), ("limits", 7));
        assert_eq!(limits.entries[0].value, Value::Integer(1000));
        assert_eq!(
            limits.entries[1].value,
            Value::Array(vec![Value::Boolean(true), Value::Boolean(false)])
        );
        assert_eq!(
            limits.entries[2],
            Entry {
                key: "name".into(),
                value: Value::String("a\"bé".into()),
                line: 11
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, fragment) in [
            ("a = 1\nb = nope", 2, "`b`: `nope` is not a string"),
            ("[t]\nk = nope", 2, "`t.k`: `nope`"),
            ("x = 1 2", 1, "`x`: unexpected `2`"),
            ("a = 1\na = 2", 2, "set twice"),
            ("[t]\n[t]", 2, "defined twice"),
            ("x = \"open", 1, "not closed"),
            ("x = [1, 2", 1, "not closed"),
            ("x = {a = 1}", 1, "inline tables"),
            ("[a.b]", 1, "nested tables"),
            ("just words", 1, "expected `key = value`"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(fragment), "{text:?}: {e}");
        }
    }
}
