//! Reading a text query for what would pin a client connection to one database connection
//! behind RDS Proxy.

/// RDS Proxy pins a session on any statement whose text is larger than this.
pub const PINNING_TEXT_SIZE: usize = 16 * 1024;

/// Why `query` would pin a client connection to one database connection behind RDS Proxy, or
/// `None` when nothing in it does. Reads the SQL outside string literals (hex literals included),
/// quoted identifiers and comments: a statement that starts with `SET` or is a SQL-level prepared
/// statement (`PREPARE`, `EXECUTE`, `DEALLOCATE`); any `@`, a user variable or a read of a
/// session's `@@` variable; `GET_LOCK`; `LOCK TABLE(S)`; `CREATE TEMPORARY`; `ROW_COUNT`,
/// `FOUND_ROWS` and `LAST_INSERT_ID` (which pin "sometimes", by AWS's word); and any query text
/// over 16 KB, which pins whatever it says.
pub fn pinning(query: &str) -> Option<&'static str> {
    if query.len() > PINNING_TEXT_SIZE {
        return Some("a statement over 16 KB");
    }
    let tokens = tokens(query);
    let mut statement_start = true;
    let mut previous: Option<&Token> = None;
    for token in &tokens {
        match token {
            Token::At => return Some("a user or session variable (@)"),
            Token::Word(word) => {
                if statement_start {
                    match word.as_str() {
                        "SET" => return Some("a SET statement"),
                        "PREPARE" | "EXECUTE" | "DEALLOCATE" => {
                            return Some("a SQL prepared statement");
                        }
                        _ => {}
                    }
                }
                if word == "GET_LOCK" {
                    return Some("GET_LOCK");
                }
                if matches!(word.as_str(), "ROW_COUNT" | "FOUND_ROWS" | "LAST_INSERT_ID") {
                    return Some("ROW_COUNT, FOUND_ROWS or LAST_INSERT_ID");
                }
                if let Some(Token::Word(before)) = previous {
                    match (before.as_str(), word.as_str()) {
                        ("LOCK", "TABLE" | "TABLES") => return Some("LOCK TABLES"),
                        ("CREATE", "TEMPORARY") => return Some("CREATE TEMPORARY TABLE"),
                        _ => {}
                    }
                }
            }
            Token::Semicolon | Token::Other => {}
        }
        statement_start = *token == Token::Semicolon;
        previous = Some(token);
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// A keyword or unquoted identifier, upper-cased.
    Word(String),
    At,
    Semicolon,
    Other,
}

/// The SQL's tokens, with strings, quoted identifiers and comments left out. An executable
/// comment (`/*! … */`, `/*M! … */`) is code to the server, so its contents are read.
fn tokens(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' | '`' => i = after_quoted(&chars, i),
            '#' => i = after_line(&chars, i),
            '-' if next == Some('-')
                && chars
                    .get(i + 2)
                    .is_none_or(|c| c.is_whitespace() || c.is_control()) =>
            {
                i = after_line(&chars, i)
            }
            '/' if next == Some('*') => {
                let executable = match chars.get(i + 2) {
                    Some('!') => Some(i + 3),
                    Some('M') if chars.get(i + 3) == Some(&'!') => Some(i + 4),
                    _ => None,
                };
                i = match executable {
                    Some(code) => code,
                    None => after_comment(&chars, i + 2),
                };
            }
            '*' if next == Some('/') => i += 2,
            '@' => {
                tokens.push(Token::At);
                i += 1;
            }
            ';' => {
                tokens.push(Token::Semicolon);
                i += 1;
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(Token::Word(word.to_uppercase()));
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                tokens.push(Token::Other);
                i += 1;
            }
        }
    }
    tokens
}

/// Past the quoted string or identifier opening at `open`: its quote doubled, or escaped with a
/// backslash in a string, does not close it.
fn after_quoted(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    chars.len()
}

fn after_line(chars: &[char], from: usize) -> usize {
    chars[from..]
        .iter()
        .position(|c| *c == '\n')
        .map_or(chars.len(), |newline| from + newline + 1)
}

fn after_comment(chars: &[char], from: usize) -> usize {
    chars[from..]
        .windows(2)
        .position(|pair| pair == ['*', '/'])
        .map_or(chars.len(), |end| from + end + 2)
}

/// Of what a connection may set, what RDS Proxy tracks for MySQL and MariaDB (AWS's "Avoiding
/// pinning an RDS Proxy"): a `SET` of only these does not pin.
const TRACKED: [&str; 14] = [
    "AUTOCOMMIT",
    "CHARACTER_SET_CLIENT",
    "CHARACTER_SET_CONNECTION",
    "CHARACTER_SET_RESULTS",
    "COLLATION_CONNECTION",
    "SQL_MODE",
    "TIME_ZONE",
    "TRANSACTION_ISOLATION",
    "TX_ISOLATION",
    "TRANSACTION_READ_ONLY",
    "TX_READ_ONLY",
    // The statements that set the same.
    "NAMES",
    "CHARACTER SET",
    "TRANSACTION",
];

/// The variables a `SET …` statement (one, alone in its query) sets that RDS Proxy does not
/// track, lower-cased: setting any of them pins the connection. None for any other statement.
pub fn untracked_settings(statement: &str) -> Vec<String> {
    let statement = statement.trim_start();
    let Some(assignments) = statement
        .get(.."SET ".len())
        .filter(|start| start.eq_ignore_ascii_case("SET "))
        .and_then(|_| statement.get("SET ".len()..))
    else {
        return Vec::new();
    };
    top_level_parts(assignments)
        .into_iter()
        .filter_map(|assignment| {
            let target = assignment.split('=').next().unwrap_or_default().trim();
            let target = target.to_uppercase();
            let mut name = target.as_str();
            for scope in ["SESSION ", "LOCAL ", "@@SESSION.", "@@LOCAL.", "@@"] {
                name = name.strip_prefix(scope).unwrap_or(name).trim_start();
            }
            let tracked = TRACKED
                .iter()
                .any(|tracked| name == *tracked || name.starts_with(&format!("{tracked} ")));
            (!tracked).then(|| name.to_lowercase())
        })
        .collect()
}

/// `text` cut at its commas outside parentheses and quotes.
fn top_level_parts(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut quote, mut start) = (Vec::new(), 0_i32, None, 0);
    for (at, c) in text.char_indices() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_pin_a_proxy_connection_are_named() {
        for (query, reason) in [
            (
                "SET SESSION innodb_lock_wait_timeout = 5",
                "a SET statement",
            ),
            ("  set names utf8mb4", "a SET statement"),
            ("BEGIN; SET @x = 1", "a SET statement"),
            ("/* hint */ SET autocommit = 0", "a SET statement"),
            ("SELECT @held", "a user or session variable (@)"),
            ("CALL reserve(1, @hold)", "a user or session variable (@)"),
            (
                "SELECT @@session.sql_mode",
                "a user or session variable (@)",
            ),
            ("SELECT GET_LOCK('m', 5)", "GET_LOCK"),
            ("DO get_lock ('m', 5)", "GET_LOCK"),
            ("LOCK TABLES products WRITE", "LOCK TABLES"),
            ("lock table products read", "LOCK TABLES"),
            (
                "CREATE TEMPORARY TABLE t (id INT)",
                "CREATE TEMPORARY TABLE",
            ),
            ("PREPARE s FROM 'SELECT 1'", "a SQL prepared statement"),
            ("SELECT 1; EXECUTE s", "a SQL prepared statement"),
            ("/*! SET x = 1 */", "a SET statement"),
        ] {
            assert_eq!(pinning(query), Some(reason), "{query}");
        }
    }

    #[test]
    fn statements_that_do_not_pin_are_not_named() {
        for query in [
            "BEGIN",
            "UPDATE stock_buckets SET reserved_stock = reserved_stock + 1 WHERE id = 3",
            "INSERT INTO holds (buyer) VALUES (X'40782D3B20534554')",
            "SELECT 'a@b', \"@c\", `@d`, 'it''s; SET x', 'back\\'slash; SET y'",
            "SELECT 1 -- SET @x\n",
            "SELECT 1 # GET_LOCK\n",
            "SELECT 1 /* LOCK TABLES; SET @x */",
            "SELECT id FROM products WHERE id = 1 LOCK IN SHARE MODE",
            "SELECT id FROM products WHERE id = 1 FOR UPDATE; COMMIT",
            "CALL reserve_hold(1, 2, X'00FF')",
            "SELECT 5--1",
            "SELECT offset FROM settings",
        ] {
            assert_eq!(pinning(query), None, "{query}");
        }
    }

    #[test]
    fn the_settings_the_proxy_does_not_track_are_named() {
        assert_eq!(
            untracked_settings(
                "SET sql_mode=(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT')),time_zone='+00:00',\
                 NAMES utf8mb4 COLLATE utf8mb4_unicode_ci;"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            untracked_settings("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            Vec::<String>::new()
        );
        assert_eq!(untracked_settings("SELECT 1"), Vec::<String>::new());
        assert_eq!(untracked_settings("SET @held = 1"), ["@held"]);
        assert_eq!(
            untracked_settings(
                "SET SESSION innodb_lock_wait_timeout = 5, lock_wait_timeout = 5, \
                 @@session.max_statement_time = 10, autocommit = 1"
            ),
            [
                "innodb_lock_wait_timeout",
                "lock_wait_timeout",
                "max_statement_time"
            ]
        );
    }
}
