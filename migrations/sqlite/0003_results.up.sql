-- Results the app can use: the requested outscale and output format, the oriented original's size and the
-- result's. Rows from before this migration keep the seed's behaviour (4x JPEG) and an unknown size.

ALTER TABLE photos ADD COLUMN outscale REAL NOT NULL DEFAULT 4;
ALTER TABLE photos ADD COLUMN format TEXT NOT NULL DEFAULT 'jpeg' CHECK (format IN ('jpeg', 'png', 'webp'));
ALTER TABLE photos ADD COLUMN width INTEGER;
ALTER TABLE photos ADD COLUMN height INTEGER;
ALTER TABLE photos ADD COLUMN upscaled_width INTEGER;
ALTER TABLE photos ADD COLUMN upscaled_height INTEGER;
