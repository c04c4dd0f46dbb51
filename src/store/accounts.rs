//! Account operations that must read and write in one transaction: registering with a role that
//! depends on whether anyone exists yet, changing a password together with revoking sessions,
//! and admin changes that must never leave the server without an enabled admin. Each runs
//! under `BEGIN IMMEDIATE`, so concurrent callers are serialised by SQLite and none can act on
//! a count another is about to change. Policy (who may register, what a role means) stays with
//! the caller, passed in as a closure or as plain values.

use super::db::Db;

use super::refresh_tokens::{consume_in, insert_refresh, revoke_all_for_user, revoke_family};
use super::users::{self, user_by_id, Role, User};
use super::ConsumeOutcome;
use super::{unix_now, Store, StoreError};

/// Create a user whose role depends on how many users exist: `decide(count)` picks the role,
/// or returns `None` to create nothing (`Ok(None)`). Counting and inserting share one write
/// transaction, so two concurrent first registrations cannot both find the table empty.
/// [`StoreError::Conflict`] if the name is taken in any ASCII case.
pub fn create_user_with_role_by_count(
    conn: &Db,
    username: &str,
    password_hash: &str,
    now: i64,
    decide: impl FnOnce(u64) -> Option<Role>,
) -> Result<Option<User>, StoreError> {
    let tx = conn.write_transaction()?;
    let Some(role) = decide(users::count_users(&tx)?) else {
        return Ok(None);
    };
    let user = users::create_user(&tx, username, password_hash, role, now)?;
    tx.commit()?;
    Ok(Some(user))
}

/// Replace a user's password hash, set `password_changed_at` to `now` (access tokens issued
/// up to then are to be refused), revoke every refresh token of theirs and, unless
/// `keep_api_keys`, delete their API keys — all or nothing. Returns how many keys were
/// deleted. [`StoreError::NotFound`] if there is no such user.
pub fn change_password(
    conn: &Db,
    user_id: i64,
    password_hash: &str,
    keep_api_keys: bool,
    now: i64,
) -> Result<usize, StoreError> {
    let tx = conn.write_transaction()?;
    users::set_password(&tx, user_id, password_hash, now)?;
    revoke_all_for_user(&tx, user_id, now)?;
    let deleted = if keep_api_keys {
        0
    } else {
        super::api_keys::delete_all_api_keys(&tx, user_id)?
    };
    tx.commit()?;
    Ok(deleted)
}

/// "Sign out everywhere": refuse the user's access tokens issued up to `now` and revoke every
/// refresh token of theirs, in one transaction. Returns how many refresh tokens were revoked.
/// API keys are not sessions and keep working. [`StoreError::NotFound`] if there is no such
/// user.
pub fn revoke_sessions(conn: &Db, user_id: i64, now: i64) -> Result<usize, StoreError> {
    let tx = conn.write_transaction()?;
    let changed = tx
        .prepare_cached("UPDATE users SET sessions_revoked_at = ?2 WHERE id = ?1")?
        .execute((user_id, now))?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    let revoked = revoke_all_for_user(&tx, user_id, now)?;
    tx.commit()?;
    Ok(revoked)
}

/// What presenting a refresh token to [`rotate_refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is used now, and the new one is stored in its family.
    Rotated(User),
    /// Nothing was issued: the token was not live ([`ConsumeOutcome::Reused`] means its family
    /// was revoked), or its account is disabled or gone (then the family is revoked too and
    /// this says [`ConsumeOutcome::Revoked`]).
    Refused(ConsumeOutcome),
}

/// Use up the refresh token `old_hash` and store `new_hash` as the next token of its family,
/// in one write transaction. Consuming and inserting apart let a racing reuse of the same
/// token revoke the family *between* the two, so the winner's new token escaped the
/// revocation; here a reuse sees either no rotation yet or the whole of it.
pub fn rotate_refresh(
    conn: &Db,
    old_hash: &str,
    new_hash: &str,
    expires_at: i64,
    now: i64,
) -> Result<Rotation, StoreError> {
    let tx = conn.write_transaction()?;
    let (user_id, family_id) = match consume_in(&tx, old_hash, now)? {
        ConsumeOutcome::Valid { user_id, family_id } => (user_id, family_id),
        refused => {
            tx.commit()?;
            return Ok(Rotation::Refused(refused));
        }
    };
    let Some(user) = user_by_id(&tx, user_id)?.filter(|u| !u.disabled) else {
        revoke_family(&tx, &family_id, now)?;
        tx.commit()?;
        return Ok(Rotation::Refused(ConsumeOutcome::Revoked));
    };
    insert_refresh(&tx, user_id, &family_id, new_hash, expires_at, now)?;
    tx.commit()?;
    Ok(Rotation::Rotated(user))
}

/// Record a new refresh token for `user_id`, but only if the account is still enabled and its
/// password has not changed since `password_changed_at` (the value the caller authenticated
/// against): a login racing a password change or a disable must not outlive it. Returns the
/// user as stored, or `None` (and writes nothing) when the account changed or is gone.
#[allow(clippy::too_many_arguments)]
pub fn insert_refresh_if_unchanged(
    conn: &Db,
    user_id: i64,
    password_changed_at: i64,
    family_id: &str,
    token_hash: &str,
    expires_at: i64,
    now: i64,
) -> Result<Option<User>, StoreError> {
    let tx = conn.write_transaction()?;
    let current = user_by_id(&tx, user_id)?
        .filter(|u| !u.disabled && u.password_changed_at == password_changed_at);
    let Some(user) = current else {
        return Ok(None);
    };
    insert_refresh(&tx, user_id, family_id, token_hash, expires_at, now)?;
    tx.commit()?;
    Ok(Some(user))
}

/// What [`update_account`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountUpdate {
    /// The change is stored; the user as they are now.
    Updated(User),
    /// Refused: afterwards no enabled admin would be left. Nothing was changed.
    WouldLeaveNoAdmin,
}

/// Disable/enable a user and/or change their role, unless afterwards no enabled admin would be
/// left. Disabling also revokes all of the user's refresh tokens. One write transaction.
/// [`StoreError::NotFound`] if there is no such user.
pub fn update_account(
    conn: &Db,
    user_id: i64,
    disabled: Option<bool>,
    role: Option<Role>,
    now: i64,
) -> Result<AccountUpdate, StoreError> {
    let tx = conn.write_transaction()?;
    let before = user_by_id(&tx, user_id)?.ok_or(StoreError::NotFound)?;
    let is_enabled_admin = |disabled: bool, role: Role| !disabled && role == Role::Admin;
    let was = is_enabled_admin(before.disabled, before.role);
    let will = is_enabled_admin(
        disabled.unwrap_or(before.disabled),
        role.unwrap_or(before.role),
    );
    if was && !will && count_enabled_admins(&tx)? <= 1 {
        return Ok(AccountUpdate::WouldLeaveNoAdmin);
    }
    if let Some(d) = disabled {
        users::set_disabled(&tx, user_id, d)?;
        if d {
            revoke_all_for_user(&tx, user_id, now)?;
        }
    }
    if let Some(r) = role {
        users::set_role(&tx, user_id, r)?;
    }
    let after = user_by_id(&tx, user_id)?.ok_or(StoreError::NotFound)?;
    tx.commit()?;
    Ok(AccountUpdate::Updated(after))
}

/// How many admins are not disabled.
fn count_enabled_admins(conn: &Db) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0")?
        .query_row((), |r| r.get(0))
}

/// Async forms of the functions above, on a blocking thread, with the store's clock.
impl Store {
    /// See [`create_user_with_role_by_count`].
    pub async fn create_user_with_role_by_count(
        &self,
        username: &str,
        password_hash: &str,
        decide: impl FnOnce(u64) -> Option<Role> + Send + 'static,
    ) -> Result<Option<User>, StoreError> {
        let (username, password_hash) = (username.to_owned(), password_hash.to_owned());
        self.run(move |c| {
            create_user_with_role_by_count(c, &username, &password_hash, unix_now(), decide)
        })
        .await
    }

    /// See [`change_password`].
    pub async fn change_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep_api_keys: bool,
    ) -> Result<usize, StoreError> {
        let password_hash = password_hash.to_owned();
        self.run(move |c| change_password(c, user_id, &password_hash, keep_api_keys, unix_now()))
            .await
    }

    /// See [`revoke_sessions`].
    pub async fn revoke_sessions(&self, user_id: i64) -> Result<usize, StoreError> {
        self.run(move |c| revoke_sessions(c, user_id, unix_now()))
            .await
    }

    /// See [`rotate_refresh`]; `now` is explicit so that callers and tests agree on expiry.
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let (old_hash, new_hash) = (old_hash.to_owned(), new_hash.to_owned());
        self.run(move |c| rotate_refresh(c, &old_hash, &new_hash, expires_at, now))
            .await
    }

    /// See [`insert_refresh_if_unchanged`].
    pub async fn insert_refresh_if_unchanged(
        &self,
        user_id: i64,
        password_changed_at: i64,
        family_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<Option<User>, StoreError> {
        let (family_id, token_hash) = (family_id.to_owned(), token_hash.to_owned());
        self.run(move |c| {
            insert_refresh_if_unchanged(
                c,
                user_id,
                password_changed_at,
                &family_id,
                &token_hash,
                expires_at,
                unix_now(),
            )
        })
        .await
    }

    /// See [`update_account`].
    pub async fn update_account(
        &self,
        user_id: i64,
        disabled: Option<bool>,
        role: Option<Role>,
    ) -> Result<AccountUpdate, StoreError> {
        self.run(move |c| update_account(c, user_id, disabled, role, unix_now()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreSettings;

    /// Each test on SQLite and on PostgreSQL (a scratch schema, when `HEARTH_TEST_POSTGRES`
    /// names a server): `NAME::sqlite`, `NAME::postgres`.
    macro_rules! on_both_engines {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                use super::*;

                #[test]
                fn sqlite() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let path = dir.path().join("hearth.db");
                    super::$name(&Store::open(&path, &StoreSettings::default()).expect("open"));
                }

                #[test]
                fn postgres() {
                    if let Some(scratch) = crate::store::scratch::Scratch::new() {
                        let settings = StoreSettings::default();
                        super::$name(&Store::open_postgres(&scratch.url, &settings).expect("open"));
                    }
                }
            }
        )*};
    }

    on_both_engines!(
        the_role_is_decided_by_the_count_inside_the_transaction,
        concurrent_first_registrations_make_exactly_one_admin,
        the_last_enabled_admin_can_be_neither_disabled_nor_demoted,
        a_refresh_token_is_recorded_only_for_an_unchanged_enabled_account,
        changing_a_password_revokes_every_session_of_the_user,
    );

    fn first_becomes_admin(count: u64) -> Option<Role> {
        Some(if count == 0 { Role::Admin } else { Role::User })
    }

    fn the_role_is_decided_by_the_count_inside_the_transaction(store: &Store) {
        let create = |name: &str, decide: fn(u64) -> Option<Role>| {
            store.run_blocking(|c| create_user_with_role_by_count(c, name, "h", 1, decide))
        };
        let first = create("ada", first_becomes_admin)
            .expect("ada")
            .expect("created");
        assert_eq!(first.role, Role::Admin);
        let second = create("bob", first_becomes_admin)
            .expect("bob")
            .expect("created");
        assert_eq!(second.role, Role::User);
        assert_eq!(create("cy", |_| None).expect("cy"), None);
        assert!(matches!(
            create("ADA", first_becomes_admin),
            Err(StoreError::Conflict(_))
        ));
        let count = store
            .run_blocking(|c| users::count_users(c))
            .expect("count");
        assert_eq!(count, 2);
    }

    fn concurrent_first_registrations_make_exactly_one_admin(store: &Store) {
        std::thread::scope(|s| {
            for i in 0..8 {
                let store = &store;
                s.spawn(move || {
                    store
                        .run_blocking(|c| {
                            create_user_with_role_by_count(
                                c,
                                &format!("u{i}"),
                                "h",
                                1,
                                first_becomes_admin,
                            )
                        })
                        .expect("create")
                        .expect("created")
                });
            }
        });
        let users = store.run_blocking(|c| users::list_users(c)).expect("list");
        assert_eq!(users.len(), 8);
        let admins = users.iter().filter(|u| u.role == Role::Admin).count();
        assert_eq!(admins, 1, "{users:?}");
    }

    fn the_last_enabled_admin_can_be_neither_disabled_nor_demoted(store: &Store) {
        let ada = store
            .run_blocking(|c| users::create_user(c, "ada", "h", Role::Admin, 1))
            .expect("ada");
        let bob = store
            .run_blocking(|c| users::create_user(c, "bob", "h", Role::User, 1))
            .expect("bob");
        let update =
            |id, disabled, role| store.run_blocking(|c| update_account(c, id, disabled, role, 2));
        assert_eq!(
            update(ada.id, Some(true), None).expect("disable"),
            AccountUpdate::WouldLeaveNoAdmin
        );
        assert_eq!(
            update(ada.id, None, Some(Role::User)).expect("demote"),
            AccountUpdate::WouldLeaveNoAdmin
        );
        // With a second admin, the first may go.
        let AccountUpdate::Updated(b) = update(bob.id, None, Some(Role::Admin)).expect("promote")
        else {
            panic!("promotion refused");
        };
        assert_eq!(b.role, Role::Admin);
        let AccountUpdate::Updated(a) = update(ada.id, Some(true), None).expect("disable") else {
            panic!("disable refused");
        };
        assert!(a.disabled);
        // Now bob is the last enabled admin; a disabled admin does not count.
        assert_eq!(
            update(bob.id, Some(true), Some(Role::User)).expect("both"),
            AccountUpdate::WouldLeaveNoAdmin
        );
        assert!(matches!(
            update(999, Some(true), None),
            Err(StoreError::NotFound)
        ));
    }

    fn a_refresh_token_is_recorded_only_for_an_unchanged_enabled_account(store: &Store) {
        let ada = store
            .run_blocking(|c| users::create_user(c, "ada", "h", Role::User, 1))
            .expect("ada");
        let insert = |pca: i64, hash: &str| {
            store.run_blocking(|c| insert_refresh_if_unchanged(c, ada.id, pca, "f", hash, 100, 2))
        };
        assert_eq!(insert(1, "t1").expect("insert").map(|u| u.id), Some(ada.id));
        // The password changed since the caller checked it.
        assert_eq!(insert(0, "t2").expect("insert"), None);
        store
            .run_blocking(|c| users::set_disabled(c, ada.id, true))
            .expect("disable");
        assert_eq!(insert(1, "t3").expect("insert"), None);
        for (hash, outcome) in [
            (
                "t1",
                crate::store::ConsumeOutcome::Valid {
                    user_id: ada.id,
                    family_id: "f".into(),
                },
            ),
            ("t2", crate::store::ConsumeOutcome::Unknown),
            ("t3", crate::store::ConsumeOutcome::Unknown),
        ] {
            let got = store
                .run_blocking(|c| crate::store::refresh_tokens::consume_refresh(c, hash, 3))
                .expect("consume");
            assert_eq!(got, outcome, "{hash}");
        }
    }

    fn changing_a_password_revokes_every_session_of_the_user(store: &Store) {
        let ada = store
            .run_blocking(|c| users::create_user(c, "ada", "old", Role::User, 1))
            .expect("ada");
        store
            .run_blocking(|c| {
                crate::store::refresh_tokens::insert_refresh(c, ada.id, "f1", "t1", 100, 1)?;
                crate::store::refresh_tokens::insert_refresh(c, ada.id, "f2", "t2", 100, 1)
            })
            .expect("tokens");
        store
            .run_blocking(|c| change_password(c, ada.id, "new", false, 5))
            .expect("change");
        let after = store
            .run_blocking(|c| users::user_by_username(c, "ada"))
            .expect("lookup")
            .expect("ada");
        assert_eq!(after.1, "new");
        assert_eq!(after.0.password_changed_at, 5);
        for t in ["t1", "t2"] {
            let outcome = store
                .run_blocking(|c| crate::store::refresh_tokens::consume_refresh(c, t, 6))
                .expect("consume");
            assert_eq!(outcome, crate::store::ConsumeOutcome::Revoked);
        }
        assert!(matches!(
            store.run_blocking(|c| change_password(c, 999, "x", false, 5)),
            Err(StoreError::NotFound)
        ));
    }
}
