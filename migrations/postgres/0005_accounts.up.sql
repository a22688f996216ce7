-- Accounts: a per-user token version. A token counts only while its `ver` claim equals it; changing the
-- password bumps it, so every token issued before stops counting in every process. Tokens without `ver`
-- (issued before this migration) are version 0, so they keep working.

ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
