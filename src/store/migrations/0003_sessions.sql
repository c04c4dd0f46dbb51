-- "Sign out everywhere": access tokens issued up to this Unix second are refused, like those
-- issued before a password change (0: never).
ALTER TABLE users ADD COLUMN sessions_revoked_at INTEGER NOT NULL DEFAULT 0;
