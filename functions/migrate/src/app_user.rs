//! The application's database user: what every function but this one logs in as. Created or
//! brought up to date after every migration, by the migrating (master) user, with exactly what
//! the request paths use and nothing else:
//!
//! - `SELECT, INSERT, UPDATE` on each table of the schema but `_sqlx_migrations`. Nothing deletes
//!   a row (holds, orders and events change status; none is removed), `SELECT … FOR UPDATE` needs
//!   `UPDATE` beside `SELECT` on MySQL 8.0.22+, and `INSERT … ON DUPLICATE KEY UPDATE` both.
//! - `EXECUTE` on each routine of the schema (`reserve_hold`, migration 0007, and
//!   `reserve_hold_v2`, 0008). The procedures are `SQL SECURITY DEFINER` (the default: neither
//!   names one), their definer the user who migrated, so on MySQL 8 and MariaDB alike their
//!   bodies run with the definer's privileges and a caller needs `EXECUTE` alone.
//! - Nothing global, no DDL, no `GRANT OPTION`, no other database.
//!
//! Re-runnable: `CREATE USER IF NOT EXISTS`, then `ALTER USER` to the secret's password (a
//! deploy after the password changed outside a rotation sets it again), then the grants, then a
//! `REVOKE` of every privilege the account holds beyond them (granted by hand, or by an older
//! release). Grants come before revokes, so the functions running meanwhile never lose a
//! privilege they use. A rotation under way owns the password: it is then left as it is.

use secrecy::{ExposeSecret, SecretString};
use shared::Error;
use shared::store::pool::Pool;
use sqlx::Row;

/// Every host: RDS Proxy connects from addresses of the VPC it was given.
pub const HOST: &str = "%";
/// What the functions may do on each table.
pub const TABLE_PRIVILEGES: [&str; 3] = ["SELECT", "INSERT", "UPDATE"];
/// sqlx's record of migrations: the migrate function's alone.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";
/// MySQL 8 refuses a user name longer than this (MariaDB takes 80).
const MAX_NAME_CHARS: usize = 32;

/// The application user's credentials, from its secret.
pub struct AppUser {
    pub name: String,
    pub password: SecretString,
    /// A rotation of the secret is under way: its function is changing the password, so this
    /// one (the current version's) may already be stale and is not set.
    pub rotating: bool,
}

impl std::fmt::Debug for AppUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppUser")
            .field("name", &self.name)
            .field("rotating", &self.rotating)
            .finish_non_exhaustive()
    }
}

impl AppUser {
    /// Refuses what could not stand in a quoted account name or password as written: the name a
    /// plain identifier, the password printable ASCII without quotes or backslashes (the
    /// template's GenerateSecretString and the rotation function exclude them).
    fn validate(&self) -> Result<(), Error> {
        let name_ok = !self.name.is_empty()
            && self.name.chars().count() <= MAX_NAME_CHARS
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(Error::Config(format!(
                "the application user's name must be 1 to {MAX_NAME_CHARS} letters, digits or \
                 underscores, got {:?}",
                self.name
            )));
        }
        let password = self.password.expose_secret();
        if password.is_empty()
            || !password
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'\'' && b != b'"' && b != b'\\')
        {
            return Err(Error::Config(
                "the application user's password must be printable ASCII without quotes or \
                 backslashes"
                    .into(),
            ));
        }
        Ok(())
    }

    fn account(&self) -> String {
        format!("'{}'@'{HOST}'", self.name)
    }
}

/// Creates or updates the user and makes its privileges exactly the application's, on the
/// database `pool` is connected to. Returns a summary for CloudFormation.
pub async fn provision(pool: &Pool, user: &AppUser) -> Result<String, Error> {
    user.validate()?;
    let (migrator, schema): (String, String) = {
        let row = sqlx::query("SELECT CAST(CURRENT_USER() AS CHAR), CAST(DATABASE() AS CHAR)")
            .fetch_one(pool)
            .await?;
        (row.try_get(0)?, row.try_get(1)?)
    };
    // Revoking the application's set from the migrating user would leave nobody to migrate.
    if migrator
        .rsplit_once('@')
        .map_or(migrator.as_str(), |(name, _)| name)
        == user.name
    {
        return Err(Error::Config(format!(
            "the application user {} is the user migrating: give the functions a user of their own",
            user.name
        )));
    }
    let account = user.account();
    let password = user.password.expose_secret();
    execute(
        pool,
        format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}'"),
    )
    .await?;
    if !user.rotating {
        execute(
            pool,
            format!("ALTER USER {account} IDENTIFIED BY '{password}'"),
        )
        .await?;
    }

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> ? \
         ORDER BY TABLE_NAME",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pool)
    .await?;
    let routines: Vec<(String, String)> = sqlx::query(
        "SELECT CAST(ROUTINE_NAME AS CHAR), CAST(ROUTINE_TYPE AS CHAR) FROM information_schema.ROUTINES \
         WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY ROUTINE_NAME",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
    .collect::<Result<_, sqlx::Error>>()?;
    let on = |table: &str| format!("{}.{}", quoted(&schema), quoted(table));
    for table in &tables {
        let privileges = TABLE_PRIVILEGES.join(", ");
        execute(
            pool,
            format!("GRANT {privileges} ON {} TO {account}", on(table)),
        )
        .await?;
    }
    for (routine, kind) in &routines {
        execute(
            pool,
            format!("GRANT EXECUTE ON {kind} {} TO {account}", on(routine)),
        )
        .await?;
    }

    let wanted = |schema_: &str, table: &str, privilege: &str| {
        schema_ == schema
            && tables.iter().any(|t| t == table)
            && TABLE_PRIVILEGES.contains(&privilege)
    };
    let mut revoked = Vec::new();
    for statement in extra_privileges(pool, user, &wanted, &schema, &routines).await? {
        execute(pool, statement.clone()).await?;
        revoked.push(statement);
    }
    if !revoked.is_empty() {
        tracing::warn!(user = %user.name, ?revoked, "revoked privileges the application user does not need");
    }
    Ok(format!(
        "application user {} on {} tables and {} routines{}{}",
        user.name,
        tables.len(),
        routines.len(),
        if user.rotating {
            " (password left to the rotation under way)"
        } else {
            ""
        },
        if revoked.is_empty() {
            String::new()
        } else {
            format!(", {} extra privileges revoked", revoked.len())
        },
    ))
}

/// The `REVOKE`s of what the user holds beyond the
/// application's set: global privileges, privileges on whole databases, on tables and columns
/// other than the set, on routines other than `EXECUTE` on ours, and every `GRANT OPTION`. Read
/// from information_schema (and mysql.procs_priv for routines, which no view shows), where the
/// migrating user sees every account's rows when it may read the mysql schema, as a master
/// user may.
async fn extra_privileges(
    pool: &Pool,
    user: &AppUser,
    wanted: &dyn Fn(&str, &str, &str) -> bool,
    schema: &str,
    routines: &[(String, String)],
) -> Result<Vec<String>, Error> {
    let grantee = user.account();
    let mut revokes = Vec::new();
    let mut grant_options = Vec::new();

    let rows = sqlx::query(
        "SELECT CAST(PRIVILEGE_TYPE AS CHAR), CAST(IS_GRANTABLE AS CHAR) FROM information_schema.USER_PRIVILEGES \
         WHERE GRANTEE = ?",
    )
    .bind(&grantee)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let (privilege, grantable): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if privilege != "USAGE" {
            revokes.push(format!("REVOKE {privilege} ON *.* FROM {grantee}"));
        }
        if grantable == "YES" {
            grant_options.push("*.*".to_owned());
        }
    }

    let rows = sqlx::query(
        "SELECT CAST(TABLE_SCHEMA AS CHAR), CAST(PRIVILEGE_TYPE AS CHAR), CAST(IS_GRANTABLE AS CHAR) \
         FROM information_schema.SCHEMA_PRIVILEGES \
         WHERE GRANTEE = ?",
    )
    .bind(&grantee)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let (database, privilege, grantable): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let on = format!("{}.*", quoted(&database));
        revokes.push(format!("REVOKE {privilege} ON {on} FROM {grantee}"));
        if grantable == "YES" {
            grant_options.push(on);
        }
    }

    let rows = sqlx::query(
        "SELECT CAST(TABLE_SCHEMA AS CHAR), CAST(TABLE_NAME AS CHAR), CAST(PRIVILEGE_TYPE AS CHAR), \
         CAST(IS_GRANTABLE AS CHAR) \
         FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = ?",
    )
    .bind(&grantee)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let (database, table, privilege, grantable): (String, String, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        let on = format!("{}.{}", quoted(&database), quoted(&table));
        if !wanted(&database, &table, &privilege) {
            revokes.push(format!("REVOKE {privilege} ON {on} FROM {grantee}"));
        }
        if grantable == "YES" {
            grant_options.push(on);
        }
    }

    let rows = sqlx::query(
        "SELECT CAST(TABLE_SCHEMA AS CHAR), CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), \
         CAST(PRIVILEGE_TYPE AS CHAR), CAST(IS_GRANTABLE AS CHAR) \
         FROM information_schema.COLUMN_PRIVILEGES WHERE GRANTEE = ?",
    )
    .bind(&grantee)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let (database, table, column, privilege, grantable): (
            String,
            String,
            String,
            String,
            String,
        ) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        );
        let on = format!("{}.{}", quoted(&database), quoted(&table));
        revokes.push(format!(
            "REVOKE {privilege} ({}) ON {on} FROM {grantee}",
            quoted(&column)
        ));
        if grantable == "YES" {
            grant_options.push(on);
        }
    }

    // Proc_priv is a SET of 'Execute', 'Alter Routine' and 'Grant'.
    let routine_rows = sqlx::query(
        "SELECT CAST(Db AS CHAR), CAST(Routine_name AS CHAR), CAST(Routine_type AS CHAR), \
         CAST(Proc_priv AS CHAR) FROM mysql.procs_priv \
         WHERE User = ? AND Host = ?",
    )
    .bind(&user.name)
    .bind(HOST)
    .fetch_all(pool)
    .await;
    let routine_rows = match routine_rows {
        Ok(rows) => rows,
        // Without SELECT on the mysql schema (an existing database's user may lack it), routine
        // grants beyond ours are not seen; the rest still converges.
        Err(err) if shared::server_errors::number(&err) == Some(1142) => {
            tracing::warn!(error = %err, "cannot read mysql.procs_priv; routine privileges left as they are");
            Vec::new()
        }
        Err(err) => return Err(err.into()),
    };
    for row in routine_rows {
        let (database, routine, kind, privileges): (String, String, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        let on = format!("{kind} {}.{}", quoted(&database), quoted(&routine));
        let ours = database == schema
            && routines.iter().any(|(name, their_kind)| {
                name.eq_ignore_ascii_case(&routine) && *their_kind == kind
            });
        for privilege in privileges.split(',').filter(|p| !p.is_empty()) {
            match privilege {
                "Grant" => grant_options.push(on.clone()),
                "Execute" if ours => {}
                other => revokes.push(format!(
                    "REVOKE {} ON {on} FROM {grantee}",
                    other.to_ascii_uppercase()
                )),
            }
        }
    }

    // The grant options first: a table's is held on its row of privileges, which revoking the
    // last of them removes. One each, though every privilege of a level reports it.
    grant_options.sort();
    grant_options.dedup();
    Ok(grant_options
        .into_iter()
        .map(|on| format!("REVOKE GRANT OPTION ON {on} FROM {grantee}"))
        .chain(revokes)
        .collect())
}

/// An identifier in backquotes, a backquote in it doubled.
fn quoted(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

/// Account statements as text (nothing to bind: no value reaches them unchecked).
async fn execute(pool: &Pool, statement: String) -> Result<(), Error> {
    sqlx::raw_sql(&statement).execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> AppUser {
        AppUser {
            name: name.to_owned(),
            password: SecretString::from(password.to_owned()),
            rotating: false,
        }
    }

    #[test]
    fn names_and_passwords_that_could_break_out_of_their_quotes_are_refused() {
        assert!(
            user("flash_sale_app", "aB3$%^&*()-_=+[]{};:,.<>/?|~`")
                .validate()
                .is_ok()
        );
        for name in ["", "app'@'%", "app user", "a-b", &"x".repeat(33)] {
            assert!(user(name, "secret").validate().is_err(), "{name:?}");
        }
        for password in ["", "it's", "back\\slash", "dou\"ble", "new\nline", "café"] {
            assert!(user("app", password).validate().is_err(), "{password:?}");
        }
    }

    #[test]
    fn the_debug_form_never_shows_the_password() {
        let printed = format!("{:?}", user("app", "hunter2hunter2"));
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn identifiers_are_backquoted_with_backquotes_doubled() {
        assert_eq!(quoted("holds"), "`holds`");
        assert_eq!(quoted("a`b"), "`a``b`");
    }
}
