UPDATE workers SET device = device || '-' || precision WHERE precision IS NOT NULL;
ALTER TABLE workers DROP COLUMN precision;
