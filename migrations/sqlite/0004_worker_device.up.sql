-- GPU workers: `device` now names where a worker runs ("cpu", "cuda:0", ...) and its precision has a
-- column of its own (it was folded into device as "cpu-bf16").

ALTER TABLE workers ADD COLUMN precision TEXT;
UPDATE workers SET precision = substr(device, 5), device = 'cpu' WHERE device LIKE 'cpu-%';
