//! Naming the databases the tests and the benchmark create beside the one in `DATABASE_URL`.

/// `mysql://user@host:3306/anything?x=y` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("mysql", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_is_replaced_and_options_kept() {
        assert_eq!(
            super::with_database("mysql://root@127.0.0.1:3306/flash_sale", "t1"),
            "mysql://root@127.0.0.1:3306/t1"
        );
        assert_eq!(
            super::with_database("mysql://u:p@h/db?ssl-mode=disabled", "t2"),
            "mysql://u:p@h/t2?ssl-mode=disabled"
        );
        assert_eq!(
            super::with_database("mysql://root@127.0.0.1:3306", "t3"),
            "mysql://root@127.0.0.1:3306/t3"
        );
    }
}
