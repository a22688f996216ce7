ALTER TABLE photos DROP COLUMN upscaled_height;
ALTER TABLE photos DROP COLUMN upscaled_width;
ALTER TABLE photos DROP COLUMN height;
ALTER TABLE photos DROP COLUMN width;
ALTER TABLE photos DROP COLUMN format;
ALTER TABLE photos DROP COLUMN outscale;
